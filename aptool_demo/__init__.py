"""Demo and test tooling for aptool, kept out of the product package ``aptool_assets``.

A synthetic district, the vendor-format i-Ready files it exports, a local SFTP server that serves them
and a local Aeries v5 simulator holding the same students: enough to run the whole platform (``aptool
demo``), its tests and its benchmarks with no district systems at hand. This package may import the
product; the product never imports it, except ``aptool demo`` (lazily, in the command).
"""
