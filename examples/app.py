"""Example Flask app calling Azure OpenAI with aoai-monitor's instrumentation on (cf. the seed's step 6).

    pip install "aoai-monitor[instrument]" flask
    export AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com AZURE_OPENAI_API_KEY=...
    export OPENAI_API_VERSION=2024-10-21 AZURE_OPENAI_DEPLOYMENT=<deployment>
    aoai-monitor otlp --token dev &          # or `aoai-monitor run` with the receiver enabled
    AOAI_MONITOR_TOKEN=dev python examples/app.py
    curl localhost:5000/completion; curl localhost:5000/stream; curl localhost:5000/embedding

Every call becomes a span (latency, time to first token, tokens, cost, request ids) and GenAI metrics in
aoai-monitor, linked to the service logs of the same request. No monkey-patching of the client: one
setup() call instruments every AzureOpenAI / AsyncAzureOpenAI client of the process.
"""

from __future__ import annotations

import os

from flask import Flask, Response
from openai import AzureOpenAI

from aoai_monitor.instrument import setup

setup(endpoint=os.environ.get("AOAI_MONITOR_OTLP", "http://localhost:4318"), token=os.environ.get("AOAI_MONITOR_TOKEN"),
      service_name=os.environ.get("OTEL_SERVICE_NAME", "aoai-example-app"))

DEPLOYMENT = os.environ.get("AZURE_OPENAI_DEPLOYMENT", "gpt-4o")
EMBEDDING_DEPLOYMENT = os.environ.get("AZURE_OPENAI_EMBEDDING_DEPLOYMENT", "text-embedding-3-small")
QUESTION = [{"role": "user", "content": "How do I send my APM data to Elastic Observability?"}]
client = AzureOpenAI(api_key=os.environ.get("AZURE_OPENAI_API_KEY"), api_version=os.environ.get("OPENAI_API_VERSION", "2024-10-21"),
                     azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"])
app = Flask(__name__)


@app.route("/completion")
def completion() -> str:
    response = client.chat.completions.create(model=DEPLOYMENT, messages=QUESTION, max_tokens=20, temperature=0)
    return (response.choices[0].message.content or "").strip()


@app.route("/stream")
def stream() -> Response:
    """Streamed: the instrumentation asks Azure for the usage chunk and keeps it out of this loop."""
    chunks = client.chat.completions.create(model=DEPLOYMENT, messages=QUESTION, max_tokens=40, stream=True)
    return Response((c.choices[0].delta.content or "" for c in chunks if c.choices), mimetype="text/plain")


@app.route("/embedding")
def embedding() -> dict:
    result = client.embeddings.create(model=EMBEDDING_DEPLOYMENT, input="Elastic Observability")
    return {"dimensions": len(result.data[0].embedding), "tokens": result.usage.prompt_tokens}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
