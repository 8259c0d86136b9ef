"""Generate N realistic Azure diagnostic records as NDJSON (RequestResponse-heavy, as real hubs carry).

Mix: 85 % RequestResponse (properties as a JSON string, ticks, masked IPs, upper-case resource ids, as in
storage archives), 5 % Audit, 10 % APIM GatewayLogs with bodies. Deterministic for a seed.

    python bench/gen_records.py 1000000 > /tmp/records.ndjson
"""

from __future__ import annotations

import random
import sys
import uuid

import orjson

TICKS_AT_UNIX_EPOCH = 621355968000000000
RESOURCES = [f"/SUBSCRIPTIONS/{s}/RESOURCEGROUPS/{g}/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/{n}"
             for s, g, n in [("12CABCB4-86E8-404F-A3D2-1DC9982F45CA", "RG-AI-PROD", "OPENAI-EASTUS"),
                             ("12CABCB4-86E8-404F-A3D2-1DC9982F45CA", "RG-AI-PROD", "OPENAI-SWEDEN"),
                             ("7D2F0C11-0B6E-4A8E-9F3C-5B1D2E3F4A5B", "RG-AI-DEV", "OPENAI-DEV-01")]]
APIM = "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG-AI-PROD/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM-AI-GW"
DEPLOYMENTS = [("gpt-4o", "gpt-4o", "2024-11-20"), ("gpt-4o-mini", "gpt-4o-mini", "2024-07-18"),
               ("gpt-4o-ptu", "gpt-4o", "2024-08-06"), ("text-embedding-3-large", "text-embedding-3-large", "1")]
OPS = {"text-embedding-3-large": "Embeddings_Create"}


def _iso(epoch_s: float) -> str:
    import time
    whole = int(epoch_s)
    frac = int((epoch_s - whole) * 10_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{frac:07d}Z"


def records(n: int, seed: int = 1, start: float = 1_762_000_000.0):
    rnd = random.Random(seed)
    t = start
    for i in range(n):
        t += rnd.expovariate(50.0)
        u = rnd.random()
        dep, model, version = DEPLOYMENTS[rnd.randrange(len(DEPLOYMENTS))]
        rid = RESOURCES[rnd.randrange(len(RESOURCES))]
        duration = int(rnd.lognormvariate(6.5, 0.8))
        if u < 0.85:
            req = int((t - duration / 1000) * 10_000_000) + TICKS_AT_UNIX_EPOCH
            props = {"apiName": "Azure OpenAI API version 2024-10-21", "requestTime": req,
                     "requestLength": rnd.randrange(200, 120_000), "responseTime": req + duration * 10_000,
                     "responseLength": rnd.randrange(100, 10_000), "objectId": "",
                     "streamType": "Streaming" if rnd.random() < 0.3 else "Non-Streaming",
                     "modelDeploymentName": dep, "modelName": model, "modelVersion": version}
            status = "200" if rnd.random() > 0.03 else rnd.choice(["429", "400", "500"])
            yield {"callerIpAddress": f"20.236.{rnd.randrange(256)}.***", "category": "RequestResponse",
                   "correlationId": str(uuid.UUID(int=rnd.getrandbits(128))), "durationMs": duration,
                   "event": "ShoeboxCallResult", "location": "eastus",
                   "operationName": OPS.get(dep, "ChatCompletions_Create"),
                   "properties": orjson.dumps(props).decode(), "resourceId": rid, "resultSignature": status,
                   "time": _iso(t), "Tenant": "eastus"}
        elif u < 0.90:
            yield {"AssetIdentity": str(uuid.UUID(int=rnd.getrandbits(128))), "Tenant": "eastus", "category": "Audit",
                   "operationName": "ListKey", "properties": {"objectId": str(uuid.UUID(int=rnd.getrandbits(128)))},
                   "resourceId": rid, "time": _iso(t)}
        else:
            pt, ct = rnd.randrange(10, 3000), rnd.randrange(1, 800)
            body = {"choices": [{"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": "Sure."},
                                 "content_filter_results": {c: {"filtered": False, "severity": "safe"}
                                                            for c in ("hate", "self_harm", "sexual", "violence")}}],
                    "created": int(t), "id": f"chatcmpl-{i}", "model": model, "object": "chat.completion",
                    "usage": {"completion_tokens": ct, "prompt_tokens": pt, "total_tokens": pt + ct}}
            yield {"DeploymentVersion": "0.44.18652.0", "Level": 4, "Sku": "Developer",
                   "callerIpAddress": f"89.160.{rnd.randrange(256)}.{rnd.randrange(256)}", "category": "GatewayLogs",
                   "correlationId": str(uuid.UUID(int=rnd.getrandbits(128))), "durationMs": duration,
                   "isRequestSuccess": True, "location": "East US", "operationName": "Microsoft.ApiManagement/GatewayLogs",
                   "properties": {"apiId": "azure-openai", "apiRevision": "1", "backendMethod": "POST",
                                  "backendRequestBody": orjson.dumps({"model": dep, "messages": [{"role": "user", "content": "hello"}]}).decode(),
                                  "backendResponseBody": orjson.dumps(body).decode(), "backendResponseCode": 200,
                                  "backendTime": duration - 3,
                                  "backendUrl": f"https://openai-eastus.openai.azure.com/openai/deployments/{dep}/chat/completions?api-version=2024-10-21",
                                  "cache": "none", "clientProtocol": "HTTP/1.1", "method": "POST", "operationId": "ChatCompletions_Create",
                                  "requestSize": 512, "responseCode": 200, "responseSize": 1400,
                                  "url": f"https://apim-ai-gw.azure-api.net/deployments/{dep}/chat/completions?api-version=2024-10-21"},
                   "resourceId": APIM, "resultType": "Succeeded", "time": _iso(t), "truncated": 0}


def write(n: int, out, seed: int = 1) -> None:
    for rec in records(n, seed):
        out.write(orjson.dumps(rec) + b"\n")


if __name__ == "__main__":
    write(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, sys.stdout.buffer)
