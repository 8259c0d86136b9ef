"""`aoai-monitor elastic setup|check`: prepare and inspect the cluster named by [[outputs.elasticsearch]]."""

from __future__ import annotations

import click
import orjson

from . import templates
from .elasticsearch import CLIENT_HINT, OutputError, explain, make_client

INSTALLED, UPDATED, SKIPPED = "installed", "updated", "skipped"


def _owner(meta: dict | None) -> str:
    meta = meta or {}
    if meta.get("managed_by") == templates.MANAGED_BY:
        return templates.MANAGED_BY
    return str(meta.get("managed_by") or (meta.get("package") or {}).get("name") or "someone else")


def _existing_meta(get, name: str, key: str, inner: str) -> dict | None:
    """The _meta of an existing template (None when it does not exist)."""
    from elasticsearch import NotFoundError

    try:
        found = get(name=name).body.get(key) or []
    except NotFoundError:
        return None
    if not found:
        return None
    return (found[0].get(inner) or {}).get("_meta") or {}


def setup_cluster(client, settings: dict) -> list[tuple[str, str, str, str]]:
    """Install what the data streams need; returns (kind, name, action, why) rows.

    Ours (`_meta.managed_by: aoai-monitor`) are created or updated; anything with the same name that
    someone else manages (Fleet's Azure OpenAI integration) is left alone, since its mappings are the reference.
    """
    from elasticsearch import NotFoundError

    done = []
    try:
        policy = client.ilm.get_lifecycle(name=templates.ILM_POLICY).body.get(templates.ILM_POLICY)
    except NotFoundError:
        policy = None
    owner = _owner(((policy or {}).get("policy") or {}).get("_meta"))
    if policy is not None and owner != templates.MANAGED_BY:
        done.append(("ilm policy", templates.ILM_POLICY, SKIPPED, f"exists, managed by {owner}"))
    else:
        client.ilm.put_lifecycle(name=templates.ILM_POLICY, body=templates.ilm_policy(settings["retention"]))
        done.append(("ilm policy", templates.ILM_POLICY, UPDATED if policy else INSTALLED,
                     f"rollover, delete {settings['retention']} after rollover"))
    for name, body in templates.component_templates().items():
        meta = _existing_meta(client.cluster.get_component_template, name, "component_templates", "component_template")
        if meta is not None and _owner(meta) != templates.MANAGED_BY:
            done.append(("component template", name, SKIPPED, f"exists, managed by {_owner(meta)}"))
            continue
        client.cluster.put_component_template(name=name, body=body)
        done.append(("component template", name, UPDATED if meta is not None else INSTALLED, ""))
    for name, body in templates.index_templates().items():
        meta = _existing_meta(client.indices.get_index_template, name, "index_templates", "index_template")
        if meta is not None and _owner(meta) != templates.MANAGED_BY:
            done.append(("index template", name, SKIPPED, f"exists, managed by {_owner(meta)} (its mappings apply)"))
            continue
        client.indices.put_index_template(name=name, body=body)
        done.append(("index template", name, UPDATED if meta is not None else INSTALLED, body["index_patterns"][0]))
    return done


def _output(config_path: str | None, name: str | None) -> dict:
    from ..cli import fail
    from ..config import ConfigError, load

    try:
        config = load(config_path)
    except ConfigError as exc:
        fail(str(exc))
    outputs = config.elasticsearch
    if not outputs:
        fail(f"{config_path or 'the config'} has no [[outputs.elasticsearch]] section; "
             "`aoai-monitor config example` shows one (pass --config or set AOAI_MONITOR_CONFIG)")
    if name:
        outputs = [s for s in outputs if s["name"] == name]
        if not outputs:
            fail(f"no [[outputs.elasticsearch]] named {name!r}; names: {[s['name'] for s in config.elasticsearch]}")
    elif len(outputs) > 1:
        fail(f"several [[outputs.elasticsearch]] sections; choose one with --output ({[s['name'] for s in outputs]})")
    return outputs[0]


def _client_errors() -> tuple:
    from ..cli import fail

    try:
        from elasticsearch import ApiError, NotFoundError, TransportError
    except ImportError:
        fail(f"`aoai-monitor elastic` needs the Elasticsearch client: {CLIENT_HINT}")
    return ApiError, NotFoundError, TransportError


CONFIG = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      envvar="AOAI_MONITOR_CONFIG", help="The `run` config with [[outputs.elasticsearch]].")
OUTPUT = click.option("--output", "output_name", default=None, help="Which [[outputs.elasticsearch]] (by name).")


@click.group("elastic")
def elastic() -> None:
    """Elasticsearch output: install templates, check the cluster (docs/elasticsearch.md)."""


@elastic.command("setup")
@CONFIG
@OUTPUT
@click.option("--dry-run", is_flag=True, help="Print the ILM policy and templates as JSON; touch no cluster.")
def setup_command(config_path: str | None, output_name: str | None, dry_run: bool) -> None:
    """Install the ILM policy, component and index templates (idempotent; skips Fleet's own templates)."""
    from ..cli import fail

    if dry_run:
        retention = _output(config_path, output_name)["retention"] if config_path else "30d"
        click.echo(orjson.dumps({"ilm_policy": {templates.ILM_POLICY: templates.ilm_policy(retention)},
                                 "component_templates": templates.component_templates(),
                                 "index_templates": templates.index_templates()}, option=orjson.OPT_INDENT_2).decode())
        return
    settings = _output(config_path, output_name)
    ApiError, _, TransportError = _client_errors()
    try:
        client = make_client(settings)
        try:
            rows = setup_cluster(client, settings)
        finally:
            client.close()
    except OutputError as exc:
        fail(str(exc))
    except (ApiError, TransportError) as exc:  # the client's errors: say which setting to fix
        fail(explain(exc, settings))
    for kind, name, action, why in rows:
        click.echo(f"{action:9}  {kind:18}  {name}" + (f"  ({why})" if why else ""))


@elastic.command("check")
@CONFIG
@OUTPUT
def check_command(config_path: str | None, output_name: str | None) -> None:
    """Connect, show the cluster version and who manages each data stream's template."""
    from ..cli import fail

    settings = _output(config_path, output_name)
    ApiError, NotFoundError, TransportError = _client_errors()
    problems = 0
    try:
        client = make_client(settings)
        try:
            info = client.info().body
            click.echo(f"cluster {info.get('cluster_name')}: Elasticsearch {info.get('version', {}).get('number')}")
            for s in templates.STREAMS:
                meta = _existing_meta(client.indices.get_index_template, s.template, "index_templates",
                                      "index_template")
                stream = s.name(settings["namespace"])
                try:
                    client.indices.get_data_stream(name=stream)
                    exists = "exists"
                except NotFoundError:
                    exists = "not created yet"
                if meta is None:
                    problems += 1
                    click.echo(f"missing    {s.template}: no index template; run `aoai-monitor elastic setup`")
                else:
                    click.echo(f"ok         {s.template}: template by {_owner(meta)}; data stream {stream} {exists}")
        finally:
            client.close()
    except OutputError as exc:
        fail(str(exc))
    except (ApiError, TransportError) as exc:
        fail(explain(exc, settings))
    if problems:
        fail(f"{problems} template(s) missing: run `aoai-monitor elastic setup --config …`")
