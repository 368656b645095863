"""Stream orders (README "Stream orders"): the same strategies trained on the experiences in other orders.

Continual-learning results depend on the order of the experiences, so `--orders K` runs every strategy in K
orders and `--orders "eo,ia,ga;ga,ia,eo"` in the orders given. Each order of a strategy is a row of its own,
named `strategy@ga>ia>eo` (a variant's too: `lora[rank=4]@ga>ia>eo`); the scenario's own order keeps the plain
name, so a run with orders holds the run without them. The order is part of the row name, so everything keyed
by it (results rows, checkpoints, resume, Ray jobs, failures, compare) needs nothing else, and the runner reads
the order back from the name (`split`).

The K orders of `--orders K`: the scenario's order, then its rotations (with K = T experiences every experience
comes once at every position: a Latin square, so position effects average out), then the other permutations in
lexicographic order of positions. An ordered row's matrix has its own rows: trained_through k is the k-th
experience of its order (run.json `config.orders` records every row's order; the report reads it).
"""
from __future__ import annotations

import itertools

SEPARATOR = "@"  # strategy@order
STEP = ">"  # between experiences of an order


def split(name: str) -> tuple[str, list[str] | None]:
    """(the strategy or variant part, the order or None) of a row name: `lora@ga>ia>eo` -> (lora, [ga, ia, eo])."""
    head, sep, tail = name.rpartition(SEPARATOR)
    if not sep or "]" in tail:  # an '@' inside a variant's brackets is a value, not an order
        return name, None
    return head, tail.split(STEP)


def row_name(strategy: str, order: list[str], scenario_order: list[str]) -> str:
    """The name of `strategy` trained in `order`: itself for the scenario's own order."""
    return strategy if list(order) == list(scenario_order) else f"{strategy}{SEPARATOR}{STEP.join(order)}"


def parse(spec: str) -> int | list[list[str]]:
    """--orders: a count (`3`) or explicit orders (`eo,ia,ga;ga,ia,eo`), checked against the scenario later."""
    text = spec.strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise ValueError(f"--orders {spec}: give at least 1 order")
        return count
    orders = [[x.strip() for x in part.split(",") if x.strip()] for part in text.split(";") if part.strip()]
    if not orders:
        raise ValueError(f"--orders {spec!r}: expected a count such as 3 or orders such as 'eo,ia,ga;ga,ia,eo'")
    return orders


def generate(experiences: list[str], count: int) -> list[list[str]]:
    """The scenario's order, its rotations, then the other permutations: `count` distinct orders."""
    n = len(experiences)
    total = 1
    for k in range(2, n + 1):
        total *= k
    if count > total:
        raise ValueError(f"--orders {count}: {n} experiences ({', '.join(experiences)}) have only {total} orders")
    rotations = [experiences[i:] + experiences[:i] for i in range(n)]
    rest = [list(p) for p in itertools.permutations(experiences) if list(p) not in rotations]
    return (rotations + rest)[:count]


def check(order: list[str], experiences: list[str], where: str) -> list[str]:
    """`order` if it holds every experience of the scenario exactly once; else one error naming `where`."""
    if sorted(order) != sorted(experiences) or len(set(order)) != len(order):
        raise ValueError(f"{where}: {','.join(order)!r} is not an order of the scenario's experiences "
                         f"{', '.join(experiences)} (each exactly once)")
    return list(order)


def resolve(spec: int | list[list[str]] | None, experiences: list[str]) -> list[list[str]]:
    """The orders a request asks for ([the scenario's own] without --orders), each checked."""
    if spec is None:
        return [list(experiences)]
    if isinstance(spec, int):
        return generate(list(experiences), spec)
    orders = [check(o, experiences, "--orders") for o in spec]
    seen = set()
    for o in orders:
        if tuple(o) in seen:
            raise ValueError(f"--orders names the order {','.join(o)} twice")
        seen.add(tuple(o))
    return orders


def expand(entries: list[str], orders: list[list[str]], experiences: list[str]) -> list[str]:
    """Every entry in every order (entries that already name an order are kept as they are): row names."""
    out = []
    for entry in entries:
        if split(entry)[1] is not None:
            out.append(entry)
            continue
        out += [row_name(entry, o, experiences) for o in orders]
    return list(dict.fromkeys(out))
