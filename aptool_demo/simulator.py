"""A faithful local Aeries v5 server (reference aeries-api.md, §10 in particular) and its synthetic district.

It serves the demo district's students (the same StudentIDs the demo's i-Ready files use) over real HTTP
on 127.0.0.1, with the behaviours that trip clients up: case-insensitive paths, arrays where one object
is expected, ``200 []`` versus 404, 1-based paging with no totals, negative attendance with period-only
days, per-school absence-code letters, history totals that lag until a nightly job, a change feed that
never mentions attendance, and injectable faults (429, 503, dropped or truncated responses, bad JSON).

This module is the one import for the demo, the tests and the benchmarks::

    with start_simulator(build_sim_district(build_district(2025))) as sim:
        ...  # sim.base_url, sim.cert, sim.faults, sim.district, sim.requests

Past school years are databases of their own (``DatabaseYear``): ``start_simulator(current, past_years=
build_past_sim_districts(district, [2023, 2024]))`` answers ``DatabaseYear=2024`` from 2024-25's district.

The parts: ``build`` (what is served), ``sim_district`` (the data and its mutations), ``calendars``,
``codes``, ``records``, ``population``, ``attendance``, ``history``; ``routes`` (the API), ``server``
(HTTP) and ``faults``.
"""

from __future__ import annotations

from aptool_demo.build import build_past_sim_districts, build_sim_district
from aptool_demo.calendars import instructional_days
from aptool_demo.codes import letters_for
from aptool_demo.faults import FaultPlan
from aptool_demo.server import DEMO_CERT, RunningSimulator, start_simulator
from aptool_demo.sim_district import SimDistrict

__all__ = [
    "DEMO_CERT",
    "FaultPlan",
    "RunningSimulator",
    "SimDistrict",
    "build_past_sim_districts",
    "build_sim_district",
    "instructional_days",
    "letters_for",
    "start_simulator",
]
