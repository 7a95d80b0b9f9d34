"""CodeDeploy AfterAllowTestTraffic hook of the gateways' blue/green deployments.

When CodeDeploy has registered the replacement (green) gateway tasks and
routed the test listener to them, this hook:

1. reads which target group the test listener forwards to, and that group's
   targets (the replacement tasks);
2. calls GET /readyz on every one of them directly (port 8080) and wants 200;
3. posts one event through the test listener (the ALB, then a replacement
   task) with the deploy-smoke ingest key and wants it accepted.

It reports Succeeded or Failed to CodeDeploy; Failed stops the deployment and
rolls it back before any production traffic moves. Only the standard library
and boto3 (in the Lambda runtime) are used.
"""

import json
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import boto3

codedeploy = boto3.client("codedeploy")
elbv2 = boto3.client("elbv2")
secrets = boto3.client("secretsmanager")

TEST_LISTENER_ARN = os.environ["TEST_LISTENER_ARN"]
TEST_URL = os.environ["TEST_URL"]  # https://<alb dns name>:<test port>
CONTAINER_PORT = int(os.environ.get("CONTAINER_PORT", "8080"))
INGEST_KEY_SECRET_ARN = os.environ["INGEST_KEY_SECRET_ARN"]
READY_TIMEOUT_S = int(os.environ.get("READY_TIMEOUT_S", "120"))


def _tls_context():
    # The listener's certificate names the public domain, not the ALB's DNS
    # name this hook calls from inside the VPC: the chain is verified, the
    # host name is not.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    return ctx


def _http(url, data=None, headers=None, context=None, timeout=5):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _replacement_targets():
    listener = elbv2.describe_listeners(ListenerArns=[TEST_LISTENER_ARN])["Listeners"][0]
    action = next(a for a in listener["DefaultActions"] if a["Type"] == "forward")
    tg = action.get("TargetGroupArn") or action["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"]
    health = elbv2.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
    return tg, [d["Target"]["Id"] for d in health]


def check():
    tg, targets = _replacement_targets()
    if not targets:
        raise RuntimeError(f"no targets in {tg}, the test listener's target group")
    deadline = time.monotonic() + READY_TIMEOUT_S
    for ip in targets:
        while True:
            try:
                status, body = _http(f"http://{ip}:{CONTAINER_PORT}/readyz")
            except OSError as e:
                status, body = None, str(e)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"/readyz of {ip} answered {status}: {body[:300]}")
            time.sleep(2)
    key = secrets.get_secret_value(SecretId=INGEST_KEY_SECRET_ARN)["SecretString"].strip()
    event = {
        "type": "page_view",
        "event_id": f"deploy-smoke-{uuid.uuid4()}",
        "customer_id": "deploy-smoke",
        "session_id": "deploy-smoke",
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "page_kind": "other",
        "duration_s": 1,
        "bounce_rate": 0,
        "exit_rate": 0,
        "page_value": 0,
    }
    status, body = _http(
        f"{TEST_URL}/v1/events",
        data=json.dumps([event]).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        context=_tls_context(),
        timeout=10,
    )
    if status != 200 or json.loads(body).get("accepted") != 1:
        raise RuntimeError(f"POST /v1/events through the test listener answered {status}: {body[:300]}")
    return f"{len(targets)} replacement task(s) ready in {tg}; one event accepted through the test listener"


def handler(event, _context):
    status = "Succeeded"
    try:
        print(check())
    except Exception as e:  # any failure fails the hook, which rolls the deployment back
        print(f"smoke check failed: {e}")
        status = "Failed"
    codedeploy.put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=status,
    )
    return status
