"""Exact duplicates (file hash) and near-duplicates (signature correlation), within and across splits.

Exact: utils.data.groups.duplicates, the same rule `python -m utils.split --duplicates` reports: in
each split the first copy (sorted by path) is kept, and a copy in a later split (train, val, test)
points at the first copy in the earlier one. Near: two images whose signatures correlate at least
NEAR_THRESHOLD but whose bytes differ. 0.98 because on the med data every pair at or above it comes
from one video (consecutive frames, the same anatomy, Doppler colour a little different), while
from 0.95 to 0.98 some 3-6 % of the pairs join frames of different videos.
"""
from __future__ import annotations

from dataclasses import dataclass

from utils.audit.issues import Issue, label_text
from utils.audit.records import AuditData, Record
from utils.audit.signatures import similar_pairs
from utils.data.groups import duplicates

NEAR_THRESHOLD = 0.98


@dataclass(frozen=True)
class Pair:
    """Two records showing (nearly) the same picture; `a` comes first in split order."""

    a: int
    b: int
    corr: float
    exact: bool
    split_a: str
    split_b: str

    @property
    def across(self) -> bool:
        return self.split_a != self.split_b


def exact_links(records: list[Record]) -> list[tuple[int, int]]:
    """(copy, kept) record indices of every byte-identical copy that is not the one kept."""
    by_key = {(r.split, r.path): r.index for r in records}
    splits: dict[str, list[str]] = {}
    for r in records:
        splits.setdefault(r.split, []).append(r.path)
    links = []
    for (first, second), found in duplicates(splits).items():
        for copy, kept in found:
            links.append((by_key[(second, copy)], by_key[(first, kept)]))
    return sorted(links)


def clusters(n: int, links: list[tuple[int, int]]) -> list[int]:
    """Connected components of `links` over n items: a component id (its smallest member) per item."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [root(i) for i in range(n)]


def find_pairs(data: AuditData, links: list[tuple[int, int]], threshold: float = NEAR_THRESHOLD) -> list[Pair]:
    """Every exact pair (all members of a set of identical files) and every near pair, a before b."""
    records = data.records
    component = clusters(len(records), links)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(component):
        members.setdefault(c, []).append(i)
    pairs = []
    for group in members.values():
        group = sorted(group, key=lambda i: records[i].order)
        for x, i in enumerate(group):
            for j in group[x + 1:]:
                pairs.append(_pair(records, i, j, 1.0, True))
    for i, j, corr in similar_pairs(data.signatures, threshold):
        if component[i] != component[j]:
            a, b = sorted((i, j), key=lambda k: records[k].order)
            pairs.append(_pair(records, a, b, corr, False))
    return sorted(pairs, key=lambda p: (records[p.a].order, records[p.b].order))


def _pair(records: list[Record], a: int, b: int, corr: float, exact: bool) -> Pair:
    return Pair(a, b, corr, exact, records[a].split, records[b].split)


def where(record: Record) -> str:
    """'train/name.png': how a file is named in evidence text."""
    return f"{record.split}/{record.name}"


def duplicate_issues(data: AuditData, links: list[tuple[int, int]], pairs: list[Pair]) -> list[Issue]:
    """A row per copy that is not the one kept (exact), and per image with an earlier near-duplicate.

    A near-duplicate's evidence is its partner in an earlier split if it has one (that is the pair
    that matters for evaluation), else its most correlated earlier partner in its own split.
    """
    records, names, views = data.records, data.names, data.cls_names
    issues = []
    for copy, kept in links:
        c, k = records[copy], records[kept]
        scope = "within" if c.split == k.split else "across"
        evidence = (f"the same file is also listed in {k.split}" if c.path == k.path
                    else f"byte-identical to {where(k)}")
        issues.append(Issue(copy, f"exact_duplicate_{scope}", evidence, label_text(c, names, views),
                            label_text(k, names, views), 1.0, kept))
    best: dict[int, Pair] = {}
    for p in pairs:
        if p.exact:
            continue
        current = best.get(p.b)
        if current is None or (p.across, p.corr) > (current.across, current.corr):
            best[p.b] = p
    for b, p in sorted(best.items()):
        scope = "across" if p.across else "within"
        issues.append(Issue(b, f"near_duplicate_{scope}", f"correlation {p.corr:.4f} with {where(records[p.a])}",
                            label_text(records[b], names, views), label_text(records[p.a], names, views),
                            round(p.corr, 6), p.a))
    return issues
