"""Elasticsearch output (issue #8): templates against Elastic's field tables, the bulk path through the real
client against the HTTP stand-in (partial failures, 429, 409 replays), checkpoints held while the cluster
fails, `elastic setup` idempotency, and `aoai-monitor run` shipping end to end."""

from __future__ import annotations

import fnmatch
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from aoai_monitor import schema
from aoai_monitor.cli import main
from aoai_monitor.config import ConfigError, load
from aoai_monitor.outputs import attach, templates
from aoai_monitor.outputs.elasticsearch import OutputError, elasticsearch_settings
from aoai_monitor.pipeline import ingest_lines
from aoai_monitor.store import Store
from tests.standins.elasticsearch import ElasticsearchStandin
from tests.test_eventhub_input import _RECORD

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples" / "elastic"
AOAI = [str(Path(sys.executable).parent / "aoai-monitor")]


@pytest.fixture
def es():
    server = ElasticsearchStandin().start()
    yield server
    server.stop()


def settings(es, **extra) -> dict:
    return elasticsearch_settings({"hosts": [es.url], "initial_backoff": "0.01s", "max_backoff": "0.05s", **extra},
                                  "outputs.elasticsearch[0]")


def lines(key: str, n: int) -> list[str]:
    return [orjson.dumps({**_RECORD, "correlationId": f"{key}-{j}"}).decode() for j in range(n)]


def ids_of(batch: list[str]) -> list[str]:
    """The deterministic ids these lines get (computed in a scratch store without outputs)."""
    with Store(":memory:") as scratch:
        ingest_lines(scratch, batch, "scratch")
        return [r[0] for r in scratch.cursor().execute("SELECT CAST(id AS VARCHAR) FROM logs ORDER BY 1").fetchall()]


# --- templates ---------------------------------------------------------------------------------------

def parse_fields_yml(path: Path) -> dict[str, dict]:
    """Leaf fields of an Elastic fields.yml (dotted name → {type, object_type}); groups are flattened away."""
    out: dict[str, dict] = {}
    stack: list[tuple[int, str]] = []
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"^(\s*)- name: (\S+)\s*$", line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            current = ".".join([s[1] for s in stack] + [m.group(2)])
            stack.append((indent, m.group(2)))
            out[current] = {}
            continue
        m = re.match(r"^\s*(type|object_type): \"?([\w*]+)\"?\s*$", line)
        if m and current:
            out[current].setdefault(m.group(1), m.group(2))
    return {k: v for k, v in out.items() if v.get("type") != "group"}


def resolve(mapping: dict, name: str) -> tuple[str, str]:
    """How our mapping types a field path: (type, how) with how = explicit | flattened | dynamic | default."""
    props = mapping["properties"]
    parts = name.split(".")
    for i, part in enumerate(parts):
        node = props.get(part)
        if node is None:
            break
        if i == len(parts) - 1:
            return node.get("type", "object"), "explicit"
        if node.get("type") == "flattened":
            return "flattened", "flattened"
        props = node.get("properties", {})
    for entry in mapping["dynamic_templates"]:
        spec = next(iter(entry.values()))
        if "path_match" in spec and fnmatch.fnmatchcase(name, spec["path_match"]):
            return spec["mapping"]["type"], "dynamic"
    return "keyword", "default"  # strings_as_keyword: what Elasticsearch does with a string it has not seen


# Elastic declares these, our schema does not (we never write them, or keep them in `extra`): dynamic mapping
# gives them Elastic's type (strings → keyword by strings_as_keyword, JSON booleans → boolean).
_CFR = "azure.open_ai.properties.backend_response_body.error.innererror.content_filter_result."
DYNAMIC = {"keyword": {"azure.timegrain", "azure.resource.type", "azure.namespace", "azure.application_id",
                       "azure.dimensions.fingerprint"},
           "boolean": set()}
REFERENCE_FILES = sorted(REFERENCE.glob("*fields.yml")) if REFERENCE.is_dir() else []


@pytest.mark.skipif(not REFERENCE_FILES, reason="reference field tables not present")
@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.name)
def test_templates_type_every_reference_field_as_elastic_does(path):
    table = "metrics" if path.name.startswith("metrics") else "logs"
    mapping = templates.mappings(table)
    ours = {f.name for f in schema.TABLES[table]}
    compared, under_flattened = 0, []
    for name, ref in parse_fields_yml(path).items():
        if name.endswith(".*"):  # Elastic: `object` with keyword leaves under any key
            assert ref == {"type": "object", "object_type": "keyword"}, (name, ref)
            assert resolve(mapping, name[:-2] + ".some_key") == ("keyword", "dynamic"), name
            compared += 1
            continue
        typ, how = resolve(mapping, name)
        if how == "flattened":
            under_flattened.append(name)  # our schema keeps that whole body as one flattened field
            continue
        if how == "default":  # not in our schema: Elasticsearch maps it from the JSON value when it occurs
            assert name not in ours and name in DYNAMIC.get(ref["type"], ()), (name, ref)
        else:
            assert typ == ref["type"], f"{path.name}: {name} is {ref['type']} in Elastic's table, {typ} in ours"
        compared += 1
    assert compared >= 9
    # Only API-body internals (choices, messages, filter results) fall under flattened fields.
    assert all(n.startswith("azure.open_ai.properties.backend_") for n in under_flattened), under_flattened


@pytest.mark.parametrize("table", templates.SHIPPED_TABLES)
def test_every_schema_field_is_mapped_with_its_schema_type(table):
    mapping = templates.mappings(table)
    for f in schema.TABLES[table]:
        typ, how = resolve(mapping, f.name)
        assert how == "explicit", f.name
        assert typ == templates.es_type(f, table)
        assert typ == f.type or (typ, f.type) in {("float", "double"), ("object", "flattened")}, f.name
    for name in ("data_stream.type", "data_stream.dataset", "data_stream.namespace"):
        assert resolve(mapping, name) == ("constant_keyword", "explicit")
    assert resolve(mapping, "@timestamp") == ("date", "explicit")


def test_index_templates_cover_the_integration_data_streams():
    ts = templates.index_templates()
    assert ts["logs-azure_openai.logs"]["index_patterns"] == ["logs-azure_openai.logs-*"]
    assert ts["metrics-azure.open_ai"]["index_patterns"] == ["metrics-azure.open_ai-*"]
    for body in ts.values():
        assert body["data_stream"] == {} and body["priority"] == 200
        assert set(body["composed_of"]) - set(body["ignore_missing_component_templates"]) <= set(templates.component_templates())
    assert templates.ilm_policy("2w")["policy"]["phases"]["delete"]["min_age"] == "14d"


# --- the bulk path -----------------------------------------------------------------------------------

def test_partial_failures_are_retried_or_dead_lettered(es):
    batch = lines("partial", 20)
    bad, throttled = ids_of(batch)[:2]
    es.item_failures[bad] = {"status": 400, "reason": "failed to parse field [x] of type [long]"}
    es.item_failures[throttled] = {"status": 429, "reason": "rejected execution", "times": 1}
    with Store(":memory:") as store:
        (output,) = attach(store, [settings(es)])
        result, _ = ingest_lines(store, batch, "test", state={"pos": 20})
        assert es.count() == 19 and output.shipped == 19
        assert [s for _, i, s in es.bulk_items if i == throttled] == [429, 201]
        assert result.dead_lettered == 1 and store.get_state("pos") == 20 and store.count("logs") == 20
        source, reason, raw = store.cursor().execute("SELECT source, reason, raw FROM dead_letters").fetchone()
        assert source == f"elasticsearch:elasticsearch/logs-azure_openai.logs-default/{bad}"
        assert reason.startswith("elasticsearch rejected the document: 400 document_parsing_exception")
        assert orjson.loads(raw)["azure"]["open_ai"]["category"] == "RequestResponse"
    doc = es.docs["logs-azure_openai.logs-default"][throttled]
    assert doc["data_stream"] == {"type": "logs", "dataset": "azure_openai.logs", "namespace": "default"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["@timestamp"]) and "id" not in doc


def test_whole_request_429_and_503_are_retried_with_backoff(es):
    es.bulk_statuses = [429, 503]
    with Store(":memory:") as store:
        attach(store, [settings(es, namespace="prod")])
        ingest_lines(store, lines("throttled", 5), "test")
    assert es.count() == 5 and sum(1 for m, p in es.requests if p.endswith("_bulk")) == 3
    assert list(es.docs) == ["logs-azure_openai.logs-prod"]


def test_replays_are_answered_409_and_never_duplicate(es, tmp_path):
    batch = lines("replay", 30)
    with Store(":memory:") as store:  # write_store = false: the store keeps state and dead letters only
        output, _prune = attach(store, [settings(es, write_store=False)])
        ingest_lines(store, batch, "test", state={"pos": 1})
        assert es.count() == 30 and store.count("logs") == 0
        result, _ = ingest_lines(store, batch, "test", state={"pos": 2})  # the input read the same batch again
        assert result.dead_lettered == 0 and store.get_state("pos") == 2
        assert output.already_indexed == 30 and es.count() == 30
    with Store(tmp_path / "other.duckdb") as other:  # another process with its own store replays it too
        (output,) = attach(other, [settings(es)])
        ingest_lines(other, batch, "test")
        assert output.already_indexed == 30 and other.count("logs") == 30
    assert es.count() == 30 and [s for *_, s in es.bulk_items].count(201) == 30


def test_a_failing_cluster_holds_the_checkpoint_until_it_recovers(es):
    batch = lines("down", 10)
    es.down = True
    with Store(":memory:") as store:
        attach(store, [settings(es, max_retries=2)])
        with pytest.raises(OutputError, match="not taken after 2 retries.*held"):
            ingest_lines(store, batch, "test", state={"pos": 10})
        assert store.get_state("pos") is None and store.count("logs") == 0 and store.count("dead_letters") == 0
        es.down = False
        ingest_lines(store, batch, "test", state={"pos": 10})
        assert store.get_state("pos") == 10 and store.count("logs") == 10 and es.count() == 10


def test_set_up_problems_hold_the_batch_and_never_leak_the_key(es):
    es.require_api_key = "id:right"
    with Store(":memory:") as store:
        attach(store, [settings(es, api_key="id:wrong-secret-value")])
        with pytest.raises(OutputError) as err:
            ingest_lines(store, lines("auth", 3), "test", state={"pos": 3})
        assert "check api_key" in str(err.value) and "wrong-secret-value" not in str(err.value)
        assert store.get_state("pos") is None and store.count("dead_letters") == 0
    es.require_api_key = None
    batch = lines("forbidden", 3)
    es.item_failures[ids_of(batch)[0]] = {"status": 403, "reason": "action [indices:data/write/bulk[s]] is unauthorized"}
    with Store(":memory:") as store:
        attach(store, [settings(es)])
        with pytest.raises(OutputError, match="elastic setup"):
            ingest_lines(store, batch, "test")
        assert store.count("logs") == 0 and store.count("dead_letters") == 0


def test_spans_and_metrics_go_to_their_own_data_streams(es):
    from aoai_monitor.normalize import metric_document

    point = metric_document(resource_id="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
                            "Microsoft.CognitiveServices/accounts/aoai", metric_name="AzureOpenAIRequests",
                            timestamp_ms=1_700_000_000_000, timegrain="PT1M", dimensions={"ModelDeploymentName": "gpt-4o"},
                            values={"Total": 3}, source="test", period_ms=60_000, region="eastus")
    span = {"id": "6f1c1a40-0000-4000-8000-000000000001", "@timestamp": 1_700_000_000_000, "trace.id": "a" * 32,
            "span.id": "b" * 16, "span.name": "chat gpt-4o", "aoai.deployment": "gpt-4o", "custom.attr": "x"}
    with Store(":memory:") as store:
        attach(store, [settings(es)])
        store.commit(metrics=[point], spans=[span])
    metric = next(iter(es.docs["metrics-azure.open_ai-default"].values()))
    assert metric["azure"]["open_ai"]["requests"]["total"] == 3
    assert metric["azure"]["dimensions"]["model_deployment_name"] == "gpt-4o"
    shipped = es.docs["traces-aoai_monitor.spans-default"][span["id"]]
    assert shipped["span"]["name"] == "chat gpt-4o" and shipped["custom"]["attr"] == "x"  # `extra` is shipped too
    assert shipped["data_stream"]["dataset"] == "aoai_monitor.spans"


# --- configuration and CLI ---------------------------------------------------------------------------

def write_config(path: Path, es_url: str, extra: str = "") -> Path:
    path.write_text(f'[[outputs.elasticsearch]]\nhosts = ["{es_url}"]\napi_key_env = "TEST_ES_KEY"\n{extra}')
    return path


def test_config_errors_say_what_to_change(tmp_path):
    bad = {"hosts": "my-cluster:9200"}, {}, {"hosts": ["http://h:9200"], "namespace": "my-ns"}, \
        {"hosts": ["http://h:9200"], "username": "elastic"}, {"hosts": ["http://h:9200"], "write_store": "no"}
    hints = ["https://host:9200", "cloud_id", "no `-`", "go together", "true or false"]
    for section, hint in zip(bad, hints):
        with pytest.raises(ConfigError, match=re.escape(hint)):
            elasticsearch_settings(section, "outputs.elasticsearch[0]")
    cfg = load(write_config(tmp_path / "c.toml", "http://h:9200"), env={"TEST_ES_KEY": "s3cret-key"})
    (section,) = cfg.elasticsearch
    assert "s3cret-key" not in repr(section) and section["namespace"] == "default" and section["write_store"] is True


def test_elastic_setup_is_idempotent_and_leaves_the_integration_alone(es, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ES_KEY", "id:key")
    es.require_api_key = "id:key"
    fleet = {"index_patterns": ["logs-azure_openai.logs-*"], "data_stream": {}, "priority": 200,
             "composed_of": ["logs-azure_openai.logs@package"],
             "_meta": {"package": {"name": "azure_openai"}, "managed_by": "fleet", "managed": True}}
    es.index_templates["logs-azure_openai.logs"] = fleet
    config = write_config(tmp_path / "c.toml", es.url, 'retention = "14d"\n')
    first = CliRunner().invoke(main, ["elastic", "setup", "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert "skipped    index template      logs-azure_openai.logs  (exists, managed by fleet" in first.output
    assert es.index_templates["logs-azure_openai.logs"] == fleet
    assert set(es.index_templates) == set(templates.index_templates())
    assert set(es.component_templates) == set(templates.component_templates())
    assert es.ilm_policies["aoai-monitor"]["phases"]["delete"]["min_age"] == "14d"
    assert es.index_templates["metrics-azure.open_ai"] == templates.index_templates()["metrics-azure.open_ai"]
    before = (dict(es.index_templates), dict(es.component_templates), dict(es.ilm_policies))
    second = CliRunner().invoke(main, ["elastic", "setup", "--config", str(config)])
    assert second.exit_code == 0 and "installed" not in second.output and second.output.count("updated") == 1 + 7 + 6
    assert (es.index_templates, es.component_templates, es.ilm_policies) == before
    check = CliRunner().invoke(main, ["elastic", "check", "--config", str(config)])
    assert check.exit_code == 0 and "template by fleet" in check.output, check.output
    monkeypatch.setenv("TEST_ES_KEY", "id:wrong")
    refused = CliRunner().invoke(main, ["elastic", "check", "--config", str(config)])
    assert refused.exit_code == 2 and "check api_key" in refused.output and "id:wrong" not in refused.output


@pytest.mark.skipif(__import__("elasticsearch").__version__[0] < 9, reason="an 8.x client talks to 8.x and 9.x clusters")
def test_a_client_newer_than_the_cluster_is_told_which_client_to_install(tmp_path, monkeypatch):
    other = ElasticsearchStandin(version="8.15.0").start()
    try:
        monkeypatch.setenv("TEST_ES_KEY", "id:key")
        result = CliRunner().invoke(main, ["elastic", "check", "--config", str(write_config(tmp_path / "c.toml", other.url))])
    finally:
        other.stop()
    assert result.exit_code == 2 and "install the client of the cluster's major version" in result.output, result.output


# --- end to end: `aoai-monitor run` ------------------------------------------------------------------

def test_run_ships_blob_archive_records_to_elasticsearch(es, tmp_path, azurite):
    from datetime import UTC, datetime

    from azure.storage.blob import BlobServiceClient

    from tests.test_blob_archive_input import blob_path

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"insights-logs-requestresponse-{azurite.create_container()[5:13]}"
    service.create_container(container)
    try:
        blob = service.get_container_client(container).get_blob_client(blob_path(datetime.now(UTC)))
        blob.create_append_blob()
        blob.append_block(("\n".join(lines("run", 40)) + "\n").encode())
        config = tmp_path / "run.toml"
        config.write_text(f'[[inputs.blob_archive]]\nstorage_account_connection_string = "{azurite.connection_string}"\n'
                          f'containers = ["{container}"]\npoll_interval = "1s"\n\n'
                          f'[[outputs.elasticsearch]]\nhosts = ["{es.url}"]\nnamespace = "e2e"\n')
        store = tmp_path / "run.duckdb"
        log = tmp_path / "run.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(AOAI + ["run", "--config", str(config), "--store", str(store), "--quiet"],
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 40
            while es.count() < 40:
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "timed out: " + log.read_text()[-2000:]
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        service.delete_container(container)
    assert list(es.docs) == ["logs-azure_openai.logs-e2e"] and es.count() == 40
    with Store(store, read_only=True) as s:
        assert s.count("logs") == 40  # write_store defaults to true: the built-in UI keeps working
