"""Outputs: where stored documents are also sent (today: Elasticsearch, docs/elasticsearch.md).

An output is an object with `ship(tx)` and `close()`; `Store.outputs` calls `ship` inside every write
transaction, before COMMIT, so a batch an output cannot take is rolled back together with the input's
checkpoint and read again.
"""

from __future__ import annotations


def attach(store, elasticsearch: list[dict]) -> list:
    """Create the configured outputs and hook them into the store; returns them (close them on exit)."""
    from .elasticsearch import ElasticsearchOutput, PruneShipped

    outputs: list = [ElasticsearchOutput(s) for s in elasticsearch]
    if any(not s["write_store"] for s in elasticsearch):
        outputs.append(PruneShipped())  # last: every output has read the rows before they are dropped
    store.outputs.extend(outputs)
    return outputs


def close(store, outputs: list) -> None:
    for output in outputs:
        if output in store.outputs:
            store.outputs.remove(output)
        output.close()
