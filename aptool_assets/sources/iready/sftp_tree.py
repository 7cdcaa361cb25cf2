"""The SFTP tree as the platform sees it: every regular file under the remote root, found without ever
leaving that root.

Real subdirectories are entered; a symlink is followed only when its target stays inside the root. A
symlink to a directory (or file) outside the root, a symlink back to a directory being listed (a loop)
and a symlink that cannot be resolved are skipped with a warning naming the path; a second view of a
directory already listed is skipped quietly. Paths are compared in canonical form (the server's
``realpath``), so ``..`` and chains of links cannot get around the check.
"""

from __future__ import annotations

import logging
import posixpath
import stat
from dataclasses import dataclass

import paramiko


@dataclass(frozen=True)
class RemoteFile:
    """A regular file on the server: POSIX path, size in bytes, mtime in epoch seconds."""

    path: str
    size: int
    mtime: int


def inside(path: str, root: str) -> bool:
    """Whether canonical ``path`` is ``root`` or below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


class TreeWalk:
    """One recursive listing of ``root`` (already checked to be a directory) on ``where``."""

    def __init__(self, sftp: paramiko.SFTPClient, root: str, where: str, log: logging.Logger):
        self.sftp, self.root, self.where, self.log = sftp, root, where, log
        self.root_canonical = sftp.normalize(root)

    def files(self) -> list[RemoteFile]:
        """Every regular file, sorted by path."""
        files: list[RemoteFile] = []
        # Canonical paths of the directories entered; real subdirectories extend their parent's canonical
        # path, so only symlinks cost a realpath round trip.
        seen = {self.root_canonical}
        stack = [(self.root, self.root_canonical)]
        while stack:
            directory, canonical = stack.pop()
            try:
                entries = self.sftp.listdir_attr(directory)
            except FileNotFoundError:  # removed since its parent was listed
                self.log.debug("skipping %s on %s: it disappeared during the scan", directory, self.where)
                continue
            for entry in entries:
                if entry.filename in (".", ".."):
                    continue
                path = posixpath.join(directory, entry.filename)
                resolved = self._resolve(entry, path, posixpath.join(canonical, entry.filename), canonical)
                if resolved is None:
                    continue
                attr, child_canonical = resolved
                mode = attr.st_mode or 0
                if stat.S_ISDIR(mode):
                    if child_canonical in seen:
                        self.log.debug("skipping %s on %s: a directory already listed", path, self.where)
                        continue
                    seen.add(child_canonical)
                    stack.append((path, child_canonical))
                elif stat.S_ISREG(mode):
                    files.append(RemoteFile(path=path, size=int(attr.st_size or 0), mtime=int(attr.st_mtime or 0)))
        return sorted(files, key=lambda f: f.path)

    def _resolve(
        self, entry: paramiko.SFTPAttributes, path: str, canonical: str, parent_canonical: str
    ) -> tuple[paramiko.SFTPAttributes, str] | None:
        """The entry's attributes and canonical path, following a symlink only within the root; None: skip it."""
        if not stat.S_ISLNK(entry.st_mode or 0):
            return entry, canonical
        try:
            attr = self.sftp.stat(path)
            target = self.sftp.normalize(path)
        except FileNotFoundError:  # OpenSSH answers "no such file" for a dangling link and for a loop of links
            self._skip(path, "a symlink whose target does not resolve (missing, or a loop of links)")
            return None
        if not inside(target, self.root_canonical):
            self._skip(path, f"a symlink to {target}, outside the remote root {self.root_canonical}")
            return None
        if stat.S_ISDIR(attr.st_mode or 0) and inside(parent_canonical, target):
            self._skip(path, f"a symlink loop: it leads back to {target}, which contains it")
            return None
        return attr, target

    def _skip(self, path: str, why: str) -> None:
        self.log.warning("skipping %s on %s: %s", path, self.where, why)


def list_tree(sftp: paramiko.SFTPClient, root: str, where: str, log: logging.Logger) -> list[RemoteFile]:
    """Every regular file under ``root`` (a directory), recursively, sorted by path; see the module doc."""
    return TreeWalk(sftp, root, where, log).files()


__all__ = ["RemoteFile", "inside", "list_tree"]
