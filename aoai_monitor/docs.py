"""Documentation generated from the schema module (docs/fields.md is this output, kept in sync by a test)."""

from __future__ import annotations

from . import schema

_ORIGIN = {schema.ELASTIC: "Elastic", schema.ECS: "ECS", schema.AOAI: "aoai-monitor"}


def fields_markdown(table: str | None = None) -> str:
    lines = ["# Field reference", "",
             "Generated from `aoai_monitor/schema.py` by `aoai-monitor fields`. In SQL, quote dotted names: "
             '`SELECT "aoai.deployment", count(*) FROM logs GROUP BY 1`. Fields a record carries that are not '
             "listed here are kept in the JSON column `extra` (dotted keys): "
             "`SELECT extra->>'$.\"azure.open_ai.properties.some_key\"' FROM logs`.", "",
             "Origin: *Elastic* = same name and meaning as Elastic's Azure OpenAI integration; *ECS* = Elastic Common "
             "Schema field set as Elastic does; *aoai-monitor* = our addition.", ""]
    for name in ([table] if table else list(schema.TABLES)):
        lines += [f"## `{name}`", "", "| field | type | origin | description |", "|---|---|---|---|",
                  "| `id` | keyword | aoai-monitor | Deterministic document id (same record ⇒ same id); Elasticsearch `_id`. |"]
        for f in schema.TABLES[name]:
            desc = f.description.replace("|", "\\|")
            lines.append(f"| `{f.name}` | {f.type} | {_ORIGIN[f.origin]} | {desc} |")
        lines.append("")
    lines += ["## Azure OpenAI metrics", "",
              "Each metric is stored as `azure.open_ai.<field>.<aggregation>` (total, avg, min, max). Elastic's nine keep "
              "Elastic's names; the others snake-case the Azure name without the AzureOpenAI prefix.", "",
              "| Azure metric | field | unit | aggregations | dimensions | PTU only |", "|---|---|---|---|---|---|"]
    for m in schema.METRICS:
        lines.append(f"| {m.azure_name} | `azure.open_ai.{m.field}` | {m.unit} | {', '.join(m.aggregations)} | "
                     f"{', '.join(m.dimensions)} | {'yes' if m.ptu_only else ''} |")
    return "\n".join(lines) + "\n"
