"""Elasticsearch index templates, component templates and the ILM policy, derived from schema.TABLES.

Every mapped field is a schema field with the schema's Elasticsearch type, adjusted only where Elastic's
"Azure OpenAI" package maps the same field differently (so Kibana's assets and a cluster that later gets
the integration see one type per field): metric values are `float` where the schema stores `double`
(schema.py: "Elastic maps ... averages as float; keep that for the mappings"), and `azure.resource.tags` /
`azure.dimensions.*` are objects whose leaves map as keyword. Index templates carry the names Fleet gives
the integration's templates, so `setup` can tell an installed integration apart and leave it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..store import parse_duration

MANAGED_BY = "aoai-monitor"
ILM_POLICY = "aoai-monitor"
SETTINGS_COMPONENT = "aoai-monitor@settings"
PRIORITY = 200  # Fleet's priority for integration templates: above the built-in logs-*-* / metrics-*-* (100)
KEYWORD_IGNORE_ABOVE = 1024  # ECS's limit: longer values stay in _source but are not indexed
# Elastic's package fields declare these as `object` with `object_type: keyword` (any key, keyword leaves).
KEYWORD_OBJECTS = ("azure.resource.tags", "azure.dimensions")


@dataclass(frozen=True)
class DataStream:
    """One data stream family `<type>-<dataset>-<namespace>` and the store table its documents come from."""
    table: str
    type: str
    dataset: str
    package: str = ""  # the Elastic integration that owns this name when installed ("" = ours only)

    @property
    def template(self) -> str:
        return f"{self.type}-{self.dataset}"

    def name(self, namespace: str) -> str:
        return f"{self.type}-{self.dataset}-{namespace}"


STREAMS: tuple[DataStream, ...] = (
    DataStream("logs", "logs", "azure_openai.logs", "azure_openai"),
    DataStream("logs", "logs", "azure.platformlogs", "azure"),  # other categories (Elastic's Azure Logs name)
    DataStream("metrics", "metrics", "azure.open_ai", "azure_openai"),
    DataStream("spans", "traces", "aoai_monitor.spans"),
    DataStream("app_metrics", "metrics", "aoai_monitor.app_metrics"),
    DataStream("alerts", "logs", "aoai_monitor.alerts"),
    DataStream("anomalies", "logs", "aoai_monitor.anomalies"),
)
SHIPPED_TABLES = tuple(dict.fromkeys(s.table for s in STREAMS))


def stream_for(table: str, dataset: str | None) -> DataStream:
    """The stream a stored row goes to: its own data_stream.dataset when it names one of ours, else the table's."""
    default = None
    for s in STREAMS:
        if s.table == table:
            if s.dataset == dataset:
                return s
            default = default or s
    if default is None:
        raise KeyError(f"table {table} is not shipped to Elasticsearch")
    return default


_DATA_STREAM_FIELDS = (
    schema.Field("data_stream.type", "constant_keyword", ""),
    schema.Field("data_stream.dataset", "constant_keyword", ""),
    schema.Field("data_stream.namespace", "constant_keyword", ""),
)


def es_type(f: schema.Field, table: str) -> str:
    """The mapping type of a schema field in a table's data stream."""
    if table == "metrics" and f.name.startswith("azure.open_ai.") and f.type == "double":
        return "float"
    if f.name in KEYWORD_OBJECTS:
        return "object"
    return f.type


def field_mapping(f: schema.Field, table: str) -> dict:
    t = es_type(f, table)
    if f.name == "event.original":  # ECS: kept in _source, neither indexed nor aggregatable
        return {"type": "keyword", "index": False, "doc_values": False}
    if t in ("keyword", "flattened"):
        return {"type": t, "ignore_above": KEYWORD_IGNORE_ABOVE}
    if t == "object":
        return {"type": "object"}
    return {"type": t}


def mappings(table: str) -> dict:
    """The `mappings` of a table's component template: nested properties + dynamic templates."""
    fields = list(schema.TABLES[table])
    names = {f.name for f in fields}
    fields += [f for f in _DATA_STREAM_FIELDS if f.name not in names]
    properties: dict = {}
    for f in fields:
        node = properties
        parts = f.name.split(".")
        for i, part in enumerate(parts[:-1]):
            parent = node.setdefault(part, {"properties": {}})
            if "properties" not in parent:
                raise ValueError(f"{table}: field {f.name} lies under {'.'.join(parts[:i + 1])}, "
                                 "which is a leaf field; rename one of them in schema.py")
            node = parent["properties"]
        if parts[-1] in node:
            raise ValueError(f"{table}: field {f.name} is also an object; rename one of them in schema.py")
        node[parts[-1]] = field_mapping(f, table)
    dynamic = [{f"{path.replace('.', '_')}_as_keyword": {
        "path_match": f"{path}.*", "mapping": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}}}
        for path in KEYWORD_OBJECTS if any(s.package for s in STREAMS if s.table == table)]  # Elastic's package fields
    # Fields outside the schema (the store's `extra`): strings as keyword, as ECS does, not text + keyword.
    dynamic.append({"strings_as_keyword": {"match_mapping_type": "string",
                                           "mapping": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}}})
    return {"dynamic_templates": dynamic, "properties": properties}


def ilm_policy(retention: str = "30d", rollover_age: str = "30d", rollover_size: str = "50gb") -> dict:
    """Roll over in the hot phase (size or age, Elastic's defaults), delete `retention` after rollover."""
    return {"policy": {"_meta": {"managed_by": MANAGED_BY, "description": "aoai-monitor data streams"},
                       "phases": {"hot": {"actions": {"rollover": {"max_primary_shard_size": rollover_size,
                                                                   "max_age": es_duration(rollover_age)}}},
                                  "delete": {"min_age": es_duration(retention), "actions": {"delete": {}}}}}}


def es_duration(text: str) -> str:
    """Our durations ('30d', '2w', '36h') in Elasticsearch's units (no weeks there)."""
    seconds = int(parse_duration(text))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def component_templates() -> dict[str, dict]:
    """Name → body of every component template `setup` installs."""
    out = {SETTINGS_COMPONENT: {"template": {"settings": {"index": {"lifecycle": {"name": ILM_POLICY}}}},
                                "_meta": {"managed_by": MANAGED_BY}}}
    for table in SHIPPED_TABLES:
        out[mappings_component(table)] = {"template": {"mappings": mappings(table)},
                                          "_meta": {"managed_by": MANAGED_BY, "schema_version": schema.SCHEMA_VERSION}}
    return out


def mappings_component(table: str) -> str:
    return f"aoai-monitor-{table}@mappings"


def index_templates() -> dict[str, dict]:
    """Name (Fleet's name for the integration's streams) → index template body."""
    out = {}
    for s in STREAMS:
        custom = f"{s.template}@custom"  # like Fleet: a place for the user's own settings, optional
        out[s.template] = {
            "index_patterns": [f"{s.template}-*"], "data_stream": {}, "priority": PRIORITY,
            "composed_of": [SETTINGS_COMPONENT, mappings_component(s.table), custom],
            "ignore_missing_component_templates": [custom],
            "_meta": {"managed_by": MANAGED_BY, "managed": True, "table": s.table,
                      "description": f"aoai-monitor {s.table} documents ({s.dataset})"}}
    return out
