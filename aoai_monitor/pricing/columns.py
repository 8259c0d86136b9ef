"""The ingest pricer's column path: what `price_documents` and `learn` do to a batch, computed per distinct key.

A request's price depends on a few fields: deployment, account, model, version, region, rate month, and
whether the request is long-context. Token counts only multiply the rates. So rows are grouped by those
fields with Arrow hash kernels. Each group is resolved once, through the engine's own functions applied
to the group's first row. Costs are then computed for whole columns. Learning works the same way: it runs
on the distinct learn-field tuples, not on every row.

The results are exactly those of the per-document path (`engine.price_documents` over `to_pylist` dicts,
then one value per row), down to the last bit of every float:

- The engine computes `float(Decimal(tokens) * rate)` and `float(sum of the three Decimal products)`.
  A rate is `m × 10^e`, so both are an integer N over 10^S. When N < 2^53 and S ≤ 22, both N and 10^S
  are exact doubles, and one IEEE division gives the correctly rounded N / 10^S. `float(Decimal)` also
  gives that value: the Decimal product and sum are exact within the context's 28 digits. A batch
  outside those bounds (absurd token counts or rates) takes the per-document path.
- The grouping key is finer than, or the same as, the engine's per-batch cache key. Within a group,
  everything the engine reads except the token counts is equal, and the group's first row stands for
  the group. Groups are visited in first-row order, so `_resolve` sees the same first document for
  each cache key as the engine does.

A batch whose columns are not what `docs_to_arrow` makes returns None from here, and the caller uses
the per-document path. That covers unexpected types and timestamps Python's datetime cannot hold.
"""

from __future__ import annotations

import decimal
import functools
from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from azure_genai_prices.types import DEFAULT_LONG_CONTEXT_THRESHOLD

from .catalogue import Deployment, account_of, learn
from .engine import COST_FIELDS, LONG_CONTEXT_TOKENS, resolve_cached, token_source
from .prices import Unpriced

_P = "azure.open_ai.properties."
_OPENAI = "microsoft.cognitiveservices/accounts"  # catalogue._is_openai_account
_NUMERIC = ("aoai.cost.input", "aoai.cost.cached_input", "aoai.cost.output", "aoai.cost.total", "aoai.cost.payg")
_TOKENS = ("aoai.tokens.input", "aoai.tokens.output", "aoai.tokens.cached", "aoai.tokens.total")
_EXACT_INT = 2 ** 53  # integers below this are exact doubles
_MAX_POW10 = 22  # 10**22 is the largest power of ten that is an exact double
# The epoch offsets of datetime.min and datetime.max, in seconds. Beyond them, to_pylist raises.
_DT_MIN_S = int((datetime(1, 1, 1) - datetime(1970, 1, 1)).total_seconds())
_DT_MAX_S = int((datetime(9999, 12, 31, 23, 59, 59) - datetime(1970, 1, 1)).total_seconds())
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}
# The engine resolves a cache key with the key's first document, whose input tokens only choose the
# long-context meters. The key holds `_long(doc)`, so with one threshold the key alone decides the
# resolution, and a resolution can be reused in later batches.
_KEY_DECIDES = DEFAULT_LONG_CONTEXT_THRESHOLD == LONG_CONTEXT_TOKENS


# --- learning ------------------------------------------------------------------------------------------

def learn_logs(table: pa.Table, names, valid: str) -> list[Deployment] | None:
    """`learn(rows)` over the rows where `valid` is set, computed on distinct tuples; None: use the rows.

    learn() keeps one entry per (source, account, name). The entry sits where its key first appeared and
    holds the values of the key's last row. Each key's winner is found per distinct tuple, and learn()
    runs on the winners ordered by each key's first row."""
    distinct = _distinct_rows(table, names, valid)
    if distinct is None:
        return None
    sub, first, last = distinct
    if not first:
        return []
    reps = _docs(sub, first)
    keys: dict[tuple, list] = {}  # key → [first row of the key, last row of the key, winning document]
    for doc, f, l in zip(reps, first, last):
        found = learn([doc])
        if not found:
            continue
        e = found[0]
        k = (e.source, e.account, e.name)
        held = keys.get(k)
        if held is None:
            keys[k] = [f, l, doc]
        else:
            held[0] = min(held[0], f)
            if l > held[1]:
                held[1], held[2] = l, doc
    return learn([doc for _, _, doc in sorted(keys.values(), key=lambda h: h[0])])


def learn_metrics(table: pa.Table, names, valid: str) -> list[Deployment] | None:
    """`learn((), rows)` over the rows where `valid` is set, computed on distinct tuples; None: use the rows.

    For metrics, learn() keeps a key's first entry, or else its first entry with a model. The distinct
    tuples in first-row order keep both, so learn() on them gives the same result."""
    distinct = _distinct_rows(table, names, valid)
    if distinct is None:
        return None
    sub, first, _ = distinct
    if not first:
        return []
    return learn((), _docs(sub, sorted(first)))


def _distinct_rows(table: pa.Table, names, valid: str):
    """(the named columns of the rows where `valid` is set, first row of each distinct tuple, last row of each);
    no rows when none is valid; None when the columns need the row-by-row path."""
    if valid not in table.column_names or table.column(valid).null_count == table.num_rows:
        return None, [], []
    sub = _valid_rows(table, names, valid)
    if sub is None:
        return None
    if not sub.num_rows:
        return sub, [], []
    ids, count = _group_ids([sub.column(n).combine_chunks() for n in sub.column_names], sub.num_rows)
    first, last = _first_last(ids, count)
    return sub, first, last


def _valid_rows(table: pa.Table, names, valid: str) -> pa.Table | None:
    have = set(table.column_names)
    present = [n for n in names if n in have]
    if not all(_is_str(table.schema.field(n).type) for n in present):
        return None
    return table.select(present).filter(pc.is_valid(table.column(valid)))


# --- pricing -------------------------------------------------------------------------------------------

def inputs(table: pa.Table, mask, names) -> pa.Table | None:
    """The named columns of the masked rows, which the engine would read as dicts. None when the column
    path cannot reproduce the per-document path (unexpected types, timestamps beyond datetime)."""
    have = set(table.column_names)
    sub = table.select([n for n in names if n in have])
    if table.column("aoai.tokens.input").null_count and table.column("aoai.tokens.output").null_count:
        sub = sub.filter(mask)  # else every row carries tokens
    for f in sub.schema:
        if f.name == "@timestamp":
            t = f.type
            if not (pa.types.is_timestamp(t) and t.tz is None and t.unit in _PER_SECOND):
                return None
            bounds = pc.min_max(sub.column(f.name))
            lo, hi = bounds["min"], bounds["max"]
            per = _PER_SECOND[t.unit]
            if lo.is_valid and (lo.value < _DT_MIN_S * per or hi.value > _DT_MAX_S * per + per - 1):
                return None  # to_pylist raises for these; the per-document path shows what happens then
        elif f.name in _TOKENS:
            if not pa.types.is_signed_integer(f.type):
                return None
        elif not _is_str(f.type):
            return None
    return sub


def deployments(sub: pa.Table) -> set:
    """The distinct aoai.deployment values of the rows (None among them when one has none)."""
    if "aoai.deployment" not in sub.column_names:
        return {None} if sub.num_rows else set()
    return set(pc.unique(sub.column("aoai.deployment")).to_pylist())


def price(table: pa.Table, mask, sub: pa.Table, catalogue, prices, default_sku,
          resolved: dict | None = None) -> pa.Table | None:
    """The table with aoai.cost.* set as `price_documents` + one value per row would set them; None: use those.

    `sub` is `inputs(table, mask, INPUT_FIELDS)`. `resolved` carries resolutions over from earlier batches:
    the caller empties it whenever the catalogue changes (prices and default_sku never change for a pricer)."""
    schema = table.schema
    names = schema.names
    if not set(COST_FIELDS) <= set(names):
        return None  # the per-document path fails the batch here
    types = {f: schema.field(f).type for f in COST_FIELDS}
    if any(types[f] != pa.float64() for f in _NUMERIC) or not all(_is_str(types[f]) for f in COST_FIELDS if f not in _NUMERIC):
        return None
    if decimal.getcontext().prec < 17:
        return None  # the engine's Decimal products might round, and the exact integer path would not
    n = sub.num_rows
    have = set(sub.column_names)

    def col(name):
        """The column, or None when it is absent or all null."""
        if name not in have:
            return None
        c = sub.column(name)
        if c.null_count == n:
            return None
        return c.chunk(0) if c.num_chunks == 1 else c.combine_chunks()

    def tokens(name):
        """engine._int per row (max(v, 0); null → 0), or None when the column holds no value (all 0)."""
        c = col(name)
        if c is None:
            return None
        return pc.max_element_wise(c if c.type == pa.int64() else c.cast(pa.int64()), 0)  # skips nulls: null → 0

    inp, out, cached, total = (tokens(f) for f in _TOKENS)
    ts = col("@timestamp")
    keys = [col("azure.open_ai.category"), col("aoai.deployment"), _accounts(col, n), col("aoai.model"),
            col("aoai.model_version"), col("azure.open_ai.location"), col(_P + "region"),
            None if ts is None else pc.floor_temporal(ts, unit="month"),
            None if inp is None else pc.greater(inp, LONG_CONTEXT_TOKENS)]
    ids, count = _group_ids([k for k in keys if k is not None], n)
    first = _firsts(ids, count)
    order = sorted(range(count), key=first.__getitem__)
    reps = _docs(sub, [first[g] for g in order])

    # Per group, what price_documents sets on each of the group's documents (its cache, per distinct key).
    values = {f: [None] * count for f in COST_FIELDS}
    rate_ints = ([None] * count, [None] * count, [None] * count)  # input, cached, output: rate × 10**S
    scales, provisioned = [None] * count, [None] * count
    cache = resolved if resolved is not None and _KEY_DECIDES else {}
    if len(cache) > 10_000:
        cache.clear()
    for g, doc in zip(order, reps):
        source = token_source(doc)
        if source is None:
            continue
        values["aoai.cost.token_source"][g] = source
        values["aoai.cost.currency"][g] = prices.currency
        month, resolution = resolve_cached(doc, cache, catalogue, prices, default_sku)
        if isinstance(resolution, Unpriced):
            values["aoai.cost.unpriced_reason"][g] = str(resolution)
            continue
        rates, s, price_model, where, assumed = resolution
        values["aoai.cost.sku"][g] = s.name
        values["aoai.cost.price_model"][g] = price_model
        values["aoai.cost.price_version"][g] = prices.version(month)
        if where:
            values["aoai.cost.region"][g] = where
        if assumed:
            values["aoai.cost.assumed"][g] = assumed
        fixed = _fixed(rates)
        if fixed is None:
            return None
        rate_ints[0][g], rate_ints[1][g], rate_ints[2][g], scales[g] = fixed
        provisioned[g] = bool(s.provisioned)

    def per_row(group_values, typ):
        """Group values → row values."""
        v = group_values[0]
        if group_values.count(v) == count:
            return pa.nulls(n, typ) if v is None else pa.repeat(pa.scalar(v, typ), n)
        return pc.take(pa.array(group_values, typ), ids)

    columns = {f: per_row(values[f], types[f]) for f in COST_FIELDS if f not in _NUMERIC}
    numeric = _costs(inp, out, cached, total, rate_ints, scales, provisioned, per_row, n)
    if numeric is None:
        return None
    columns.update(numeric)

    # One new table instead of thirteen set_column calls; the fields are the ones set_column(i, f, v) makes.
    arrays, fields, same = table.columns, list(schema), True
    if n != table.num_rows:  # rows without tokens get no cost (null), as in the per-document path
        mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    for f in COST_FIELDS:
        i = names.index(f)
        v = columns[f]
        if n != table.num_rows:
            v = pc.replace_with_mask(pa.nulls(table.num_rows, types[f]), mask, v)
        arrays[i] = v
        field = pa.field(f, types[f])
        if not fields[i].equals(field, check_metadata=True):
            fields[i], same = field, False
    return pa.Table.from_arrays(arrays, schema=schema if same else pa.schema(fields, metadata=schema.metadata))


def _costs(inp, out, cached, total, rate_ints, scales, provisioned, per_row, n) -> dict | None:
    """engine._cost and price_documents' cost fields for whole columns, with exact integers (module doc).

    Token arguments are engine._int per row, or None for a column without any value (0 throughout).
    None: some row is beyond the exact integer path."""
    priced = [p is not None for p in provisioned]
    if not any(priced):
        return {f: pa.nulls(n, pa.float64()) for f in _NUMERIC}
    try:
        # Embeddings report prompt and total only: input = total when input and output are both 0.
        if total is not None:
            if inp is None and out is None:
                inp = total
            elif inp is None:
                inp = pc.if_else(pc.equal(out, 0), total, 0)
            elif out is None:
                inp = pc.if_else(pc.equal(inp, 0), total, inp)
            else:
                both = pc.add_checked(inp, out)  # both ≥ 0: the sum is 0 where both are
                if pc.min(both).as_py() == 0:
                    inp = pc.if_else(pc.equal(both, 0), total, inp)
        # Cached tokens are part of the input.
        if cached is not None and inp is not None:
            cached = pc.min_element_wise(cached, inp)
            inp = pc.subtract(inp, cached)
        else:
            cached = None  # min(cached, 0) = 0
        parts = [None if t is None else pc.multiply_checked(t, per_row(list(r), pa.int64()))
                 for t, r in zip((inp, cached, out), rate_ints)]
        n_sum = None
        for p in parts:
            if p is not None:
                n_sum = p if n_sum is None else pc.add_checked(n_sum, p)
    except pa.ArrowInvalid:  # int64 overflow
        return None
    if n_sum is not None:
        biggest = pc.max(n_sum).as_py()
        if biggest is not None and biggest >= _EXACT_INT:
            return None
    known = {s for s in scales if s is not None}
    denominator = pa.scalar(known.pop(), pa.float64()) if len(known) == 1 else per_row(scales, pa.float64())
    zero = per_row([0.0 if p else None for p in priced], pa.float64())  # the cost of no tokens

    def cost(numerator):
        return zero if numerator is None else pc.divide(numerator.cast(pa.float64()), denominator)

    payg = cost(n_sum)
    result = {"aoai.cost.input": cost(parts[0]), "aoai.cost.cached_input": cost(parts[1]),
              "aoai.cost.output": cost(parts[2]), "aoai.cost.total": payg, "aoai.cost.payg": payg}
    if any(provisioned):  # PTU: capacity is billed by the hour; payg is what the tokens would cost
        ptu = per_row(provisioned, pa.bool_())
        for f in ("aoai.cost.input", "aoai.cost.cached_input", "aoai.cost.output", "aoai.cost.total"):
            result[f] = pc.if_else(ptu, 0.0, result[f])
    return result


@functools.lru_cache(maxsize=1024)
def _fixed(rates) -> tuple[int, int, int, float] | None:
    """The rates as integers over one power of ten: (input, cached, output, 10**S). None if they do not fit."""
    parts = []
    for r in (rates.input, rates.cached_input, rates.output):
        if not isinstance(r, Decimal) or not r.is_finite() or r.is_signed():
            return None
        _, digits, exp = r.as_tuple()
        parts.append((int("".join(map(str, digits))), exp))
    s = max(0, max(-e for _, e in parts))
    if s > _MAX_POW10:
        return None
    coefficients = [m * 10 ** (e + s) for m, e in parts]
    if any(c >= 2 ** 63 for c in coefficients):
        return None
    return coefficients[0], coefficients[1], coefficients[2], float(10 ** s)


def _accounts(col, n: int) -> pa.Array | None:
    """catalogue.account_of per row: the resource name for service logs, the backend host for APIM logs."""
    provider = col("azure.resource.provider")
    by_url = _map_distinct(col(_P + "backend_url"), lambda u: account_of({_P + "backend_url": u}))
    if provider is None or pc.index(provider, _OPENAI).as_py() < 0:
        return by_url  # no service log among the rows
    openai = pc.equal(provider, _OPENAI)
    by_name = _map_distinct(col("azure.resource.name"),
                            lambda v: account_of({"azure.resource.provider": _OPENAI, "azure.resource.name": v}))
    none = pa.nulls(n, pa.string())
    return pc.if_else(pc.fill_null(openai, False), none if by_name is None else by_name, none if by_url is None else by_url)


def _map_distinct(column, fn) -> pa.Array | None:
    """fn applied to each distinct value of a string column (nulls stay null)."""
    if column is None:
        return None
    enc = pc.dictionary_encode(column)
    return pc.take(pa.array([fn(v) for v in enc.dictionary.to_pylist()], pa.string()), enc.indices)


# --- grouping ------------------------------------------------------------------------------------------

def _group_ids(arrays: list, n: int) -> tuple[pa.Array, int]:
    """Dense ids (0..count-1) of each row's tuple of values across the arrays (null is a value of its own),
    numbered in order of first appearance, as dictionary_encode numbers values."""
    codes, card, packed = None, 1, False
    for a in arrays:
        enc = pc.dictionary_encode(a, null_encoding="encode")
        k = len(enc.dictionary)
        if k == 1:
            continue  # one value throughout: it splits nothing
        if codes is None:
            codes, card = enc.indices, k
            continue
        if card * k >= 2 ** 62:  # renumber densely before the product could overflow
            dense = pc.dictionary_encode(codes)
            codes, card, packed = dense.indices, len(dense.dictionary), False
        codes = pc.add(pc.multiply(codes, pa.scalar(k, pa.int64())), enc.indices)
        card, packed = card * k, True
    if codes is None:
        return pa.repeat(pa.scalar(0, pa.int32()), n), 1 if n else 0
    if packed:
        dense = pc.dictionary_encode(codes)
        codes, card = dense.indices, len(dense.dictionary)
    return codes, card


def _firsts(ids: pa.Array, count: int) -> list[int]:
    """Each group's first row, for ids numbered in order of first appearance (checked; else found by group_by).

    The rows where the running maximum of the ids rises are where ids first appear, if those rises
    are exactly the ids 0, 1, …, count-1 in turn."""
    n = len(ids)
    if count <= 1:
        return [0] * count
    top = pc.cumulative_max(ids)
    rises = pc.indices_nonzero(pc.greater(top.slice(1), top.slice(0, n - 1))).to_pylist()
    if len(rises) == count - 1 and top[0].as_py() == 0 and top[n - 1].as_py() == count - 1:
        return [0] + [i + 1 for i in rises]
    return _first_last(ids, count)[0]


def _first_last(ids: pa.Array, count: int) -> tuple[list[int], list[int]]:
    """Each group's first and last row."""
    rows = pc.indices_nonzero(pc.is_valid(ids))  # 0 … len-1 (ids has no nulls)
    agg = pa.table({"g": ids, "i": rows.cast(pa.int64())}).group_by("g", use_threads=False).aggregate(
        [("i", "min"), ("i", "max")])
    first, last = [0] * count, [0] * count
    for g, lo, hi in zip(agg.column("g").to_pylist(), agg.column("i_min").to_pylist(), agg.column("i_max").to_pylist()):
        first[g], last[g] = lo, hi
    return first, last


def _docs(sub: pa.Table, rows) -> list[dict]:
    """The given rows as the engine's documents (dicts without nulls)."""
    picked = sub.take(pa.array(list(rows), pa.int64()))
    return [{k: v for k, v in row.items() if v is not None} for row in picked.to_pylist()]


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)
