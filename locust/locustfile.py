"""cartpulse capacity test: dashboard viewers on the live stream plus shop traffic.

Two user classes:

* ``DashboardViewer`` opens the WebSocket at ``/v1/stream`` (docs/stream.md),
  authenticates with a read-scope key, subscribes to ``kpis`` and ``scores``
  and reports to Locust, as request events of type ``WS``:
    - ``connect``: TCP + TLS + upgrade + authentication, until the socket is usable;
    - ``subscribe``: until the server's ``subscribed`` control message;
    - ``update kpis`` / ``update scores``: receipt time minus the message's
      ``ts`` (the server's wall clock at publish), per message;
    - failures: ``_error`` messages, unexpected closes (with the close code),
      malformed frames, and a kpis stream that stays silent too long.
* ``ShopTraffic`` is a shop backend posting batches of events to
  ``/v1/events``: it keeps ``BATCH_SIZE`` visitor sessions going and every
  batch carries the next event of each, stamped with the current time, with
  globally unique ids. Sessions look like the UCI Online Shoppers ones (and
  like ``src/replay/synthetic.rs``): page views dominated by product pages,
  carts, about 15 % end in a purchase, every one ends with ``session_end``.
  A batch fails unless every event is accepted (or is a duplicate).

Configuration is environment variables (``locust/capacity.sh`` sets them):

    CARTPULSE_READ_KEY     read-scope key for the viewers (required if VIEWERS > 0)
    CARTPULSE_INGEST_KEY   ingest-scope key for the shop traffic (required if PRODUCERS > 0)
    VIEWERS                number of DashboardViewer users        (default 2000)
    PRODUCERS              number of ShopTraffic users            (default 4)
    EVENT_RATE             events/s all producers together aim at (default 2000)
    BATCH_SIZE             events per POST                        (default 50)
    STREAM_AUTH            header | message | token               (default header)
    KPI_SILENCE_S          kpis silence that counts as a failure  (default 10)
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import datetime, timezone

import gevent
import websocket
from locust import FastHttpUser, User, constant, constant_throughput, events, task
from locust.exception import StopUser


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


VIEWERS = _env_int("VIEWERS", 2000)
PRODUCERS = _env_int("PRODUCERS", 4)
EVENT_RATE = _env_float("EVENT_RATE", 2000.0)
BATCH_SIZE = max(1, _env_int("BATCH_SIZE", 50))
STREAM_AUTH = os.environ.get("STREAM_AUTH", "header")
KPI_SILENCE_S = _env_float("KPI_SILENCE_S", 10.0)
READ_KEY = os.environ.get("CARTPULSE_READ_KEY", "")
INGEST_KEY = os.environ.get("CARTPULSE_INGEST_KEY", "")

# Unique per Locust process, so ids never collide across workers or runs.
RUN_ID = uuid.uuid4().hex[:10]
# More gateways of the same deployment (comma-separated base URLs): users are
# spread round-robin over --host and these, as a load balancer would.
EXTRA_HOSTS = [h.strip().rstrip("/") for h in os.environ.get("EXTRA_HOSTS", "").split(",") if h.strip()]
_NEXT_HOST = [0]


def _pick_host(default: str) -> str:
    """The gateway this user talks to: round-robin over --host and EXTRA_HOSTS."""
    hosts = [default.rstrip("/")] + EXTRA_HOSTS
    _NEXT_HOST[0] += 1
    return hosts[_NEXT_HOST[0] % len(hosts)]


@events.init.add_listener
def _check_keys(environment, **_kwargs):
    missing = []
    if VIEWERS > 0 and not READ_KEY:
        missing.append("CARTPULSE_READ_KEY")
    if PRODUCERS > 0 and not INGEST_KEY:
        missing.append("CARTPULSE_INGEST_KEY")
    if missing:
        raise SystemExit(f"locustfile: set {' and '.join(missing)} (or VIEWERS=0 / PRODUCERS=0)")


def _now_ms() -> float:
    return time.time() * 1000.0


def _ws_url(host: str) -> str:
    host = host.rstrip("/")
    if host.startswith("https://"):
        return "wss://" + host[len("https://") :] + "/v1/stream"
    if host.startswith("http://"):
        return "ws://" + host[len("http://") :] + "/v1/stream"
    return host + "/v1/stream"


class DashboardViewer(User):
    """One dashboard: a WebSocket subscribed to kpis and scores."""

    fixed_count = VIEWERS
    # The task below runs for the user's whole life; no think time.
    wait_time = constant(0)

    def _fire(self, name: str, response_time: float, length: int = 0, exception: Exception | None = None):
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=response_time,
            response_length=length,
            exception=exception,
            context={},
        )

    def _stream_token(self) -> str:
        """A short-lived stream token from POST /v1/stream/token (STREAM_AUTH=token)."""
        import urllib.request

        req = urllib.request.Request(
            self.target + "/v1/stream/token",
            method="POST",
            headers={"Authorization": f"Bearer {READ_KEY}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (the host is the test target)
            return json.loads(resp.read())["token"]

    def on_start(self):
        self.ws = None
        self.target = _pick_host(self.host)
        url = _ws_url(self.target)
        headers = []
        start = _now_ms()
        try:
            if STREAM_AUTH == "header":
                headers = [f"Authorization: Bearer {READ_KEY}"]
            elif STREAM_AUTH == "token":
                url += "?token=" + self._stream_token()
            self.ws = websocket.create_connection(
                url,
                header=headers,
                timeout=10,
                skip_utf8_validation=True,
            )
            if STREAM_AUTH == "message":
                self.ws.send(json.dumps({"type": "auth", "token": READ_KEY}))
        except Exception as e:  # noqa: BLE001 (every connect failure is a failed request)
            self._fire("connect", _now_ms() - start, exception=e)
            raise StopUser() from e
        self._fire("connect", _now_ms() - start)

        self.last_kpis = time.monotonic()
        self.last_ping = time.monotonic()
        start = _now_ms()
        try:
            self.ws.send(json.dumps({"type": "subscribe", "topics": ["kpis", "scores"]}))
            while True:
                msg = json.loads(self.ws.recv())
                data = msg.get("data") or {}
                if msg.get("topic") == "_control" and data.get("type") == "subscribed":
                    break
                if msg.get("topic") == "_error":
                    raise RuntimeError(f"subscribe refused: {data.get('code')}: {data.get('message')}")
                # An update may race ahead of the acknowledgement; count it.
                self._on_message(msg, 0)
        except Exception as e:  # noqa: BLE001
            self._fire("subscribe", _now_ms() - start, exception=e)
            self._close()
            raise StopUser() from e
        self._fire("subscribe", _now_ms() - start)
        self.last_kpis = time.monotonic()

    def _on_message(self, msg: dict, length: int):
        topic = msg.get("topic")
        if topic in ("kpis", "scores"):
            ts = msg.get("ts")
            if not isinstance(ts, (int, float)):
                self._fire(f"update {topic}", 0, length, RuntimeError("message without a numeric ts"))
                return
            self._fire(f"update {topic}", max(0.0, _now_ms() - ts), length)
            if topic == "kpis":
                self.last_kpis = time.monotonic()
        elif topic == "_error":
            data = msg.get("data") or {}
            self._fire("server error", 0, length, RuntimeError(f"{data.get('code')}: {data.get('message')}"))
        elif topic == "_control" and (msg.get("data") or {}).get("type") == "gap":
            # Only after a reconnect with `since`; this client never sends one.
            self._fire("gap", 0, length, RuntimeError(f"gap: {msg.get('data')}"))

    @task
    def listen(self):
        if self.ws is None:
            raise StopUser()
        self.ws.settimeout(1.0)
        while True:
            now = time.monotonic()
            if now - self.last_ping >= 20:
                self.ws.send('{"type":"ping"}')
                self.last_ping = now
            if now - self.last_kpis > KPI_SILENCE_S:
                self._fire("kpis silence", (now - self.last_kpis) * 1000, 0, RuntimeError(f"no kpis for {KPI_SILENCE_S:g} s"))
                self.last_kpis = now
            try:
                opcode, frame = self.ws.recv_data(control_frame=False)
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException as e:
                self._fire("disconnect", 0, 0, e)
                self._close()
                raise StopUser() from e
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame[:2], "big") if len(frame) >= 2 else None
                self._fire("disconnect", 0, 0, RuntimeError(f"server closed the stream (code {code})"))
                self._close()
                raise StopUser()
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            try:
                msg = json.loads(frame)
            except ValueError as e:
                self._fire("bad frame", 0, len(frame), e)
                continue
            self._on_message(msg, len(frame))
            gevent.sleep(0)

    def _close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 (closing a dead socket)
                pass
            self.ws = None

    def on_stop(self):
        self._close()


# --- shop traffic --------------------------------------------------------------

PRICES = [round(0.5 + 49.5 * random.Random(i).random() ** 2, 2) for i in range(500)]
COUNTRIES = ["United Kingdom"] * 80 + ["Germany"] * 5 + ["France"] * 5 + ["EIRE"] * 3 + ["Spain", "Netherlands", "Belgium"] * 2 + ["Portugal"]
PAGE_METRICS = {  # mean duration, max bounce, exit range (as in synthetic.rs)
    "administrative": (25.0, 0.03, 0.01, 0.05),
    "informational": (35.0, 0.05, 0.02, 0.10),
    "product": (45.0, 0.04, 0.01, 0.08),
    "other": (10.0, 0.20, 0.05, 0.20),
}


def _geometric(rng: random.Random, mean: float, cap: int) -> int:
    if mean <= 0:
        return 0
    p = 1.0 / (1.0 + mean)
    n = 0
    while n < cap and rng.random() > p:
        n += 1
    return n


class Session:
    """One visit: its events come out one at a time, stamped when sent."""

    def __init__(self, rng: random.Random, prefix: str, n: int, customer: dict):
        self.id = f"{prefix}-s{n}"
        self.customer = customer
        self.n = n
        visitor = "other" if customer["other"] else ("new" if customer["visits"] == 0 else "returning")
        customer["visits"] += 1
        buys = rng.random() < (0.16 if visitor == "returning" else 0.11)
        kinds = ["product"] * ((3 + _geometric(rng, 22, 300)) if buys else (1 + _geometric(rng, 11, 300)))
        kinds += ["administrative"] * _geometric(rng, 3.0 if buys else 1.8, 30)
        kinds += ["informational"] * _geometric(rng, 0.5, 20)
        rng.shuffle(kinds)
        if rng.random() < 0.5:
            kinds.insert(0, "other")
        special_day = 0.0
        single = len(kinds) == 1
        self.bodies: list[dict] = []
        for kind in kinds:
            mean_s, bounce_max, exit_lo, exit_hi = PAGE_METRICS[kind]
            if single:
                bounce, exit_rate = 0.2, 0.2
            else:
                bounce = round(bounce_max * rng.random() ** 2, 4)
                exit_rate = round(exit_lo + (exit_hi - exit_lo) * rng.random(), 4)
            value = 0.0
            if kind == "product" and buys and rng.random() < 0.55:
                value = round(5 + 75 * rng.random(), 2)
            elif kind == "product" and rng.random() < 0.03:
                value = round(1 + 29 * rng.random(), 2)
            self.bodies.append(
                {
                    "type": "page_view",
                    "page_kind": kind,
                    "duration_s": None if rng.random() < 0.02 else round(rng.expovariate(1 / mean_s), 1),
                    "bounce_rate": bounce,
                    "exit_rate": exit_rate,
                    "page_value": value,
                    "special_day": special_day,
                    "os": customer["os"],
                    "browser": customer["browser"],
                    "region": customer["region"],
                    "traffic_type": customer["traffic_type"],
                    "visitor_type": visitor,
                }
            )
        lines = []
        if buys:
            for sku in rng.sample(range(500), rng.randint(1, 6)):
                lines.append({"sku": f"SKU{sku + 1:04d}", "quantity": 1 + _geometric(rng, 0.8, 11), "unit_price": PRICES[sku]})
        # Carts: every bought line is added; some others fill a cart and leave.
        cart = [{"type": "add_to_cart", "sku": l["sku"], "quantity": l["quantity"], "unit_price": l["unit_price"]} for l in lines]
        extra = (1 if rng.random() < 0.25 else 0) if buys else (rng.randint(1, 3) if rng.random() < 0.33 else 0)
        for _ in range(extra):
            sku = rng.randrange(500)
            cart.append({"type": "add_to_cart", "sku": f"SKU{sku + 1:04d}", "quantity": 1, "unit_price": PRICES[sku]})
            if buys or rng.random() < 0.4:
                cart.append({"type": "remove_from_cart", "sku": f"SKU{sku + 1:04d}", "quantity": 1})
        # Cart changes follow a random product page, in cart order.
        positions = sorted(rng.randrange(len(self.bodies)) for _ in cart)
        for offset, (pos, change) in enumerate(zip(positions, cart)):
            self.bodies.insert(pos + 1 + offset, change)
        if buys:
            self.bodies.append({"type": "purchase", "invoice": f"{prefix}-i{n}", "country": customer["country"], "lines": lines})
        self.bodies.append({"type": "session_end"})
        self.k = 0

    def next_event(self, now: str) -> dict | None:
        if self.k >= len(self.bodies):
            return None
        body = self.bodies[self.k]
        self.k += 1
        return {
            **body,
            "event_id": f"{self.id}-{self.k}",
            "customer_id": self.customer["id"],
            "session_id": self.id,
            "time": now,
        }


class ShopTraffic(FastHttpUser):
    """A shop backend: BATCH_SIZE concurrent visits, one event of each per POST."""

    fixed_count = PRODUCERS
    # Every producer sends the same share of EVENT_RATE.
    wait_time = constant_throughput(EVENT_RATE / max(1, PRODUCERS) / BATCH_SIZE)
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self):
        self.target = _pick_host(self.host)
        self.rng = random.Random()
        self.prefix = f"lc-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        pool = 3000
        self.customers = [
            {
                "id": f"{self.prefix}-c{k}",
                "os": self.rng.choices(range(1, 9), [26, 53, 21, 4, 1, 1, 1, 1])[0],
                "browser": self.rng.choices(range(1, 14), [20, 65, 1, 6, 4, 1, 1, 1, 1, 1, 1, 1, 1])[0],
                "region": self.rng.choices(range(1, 10), [39, 9, 20, 10, 3, 7, 6, 4, 4])[0],
                "traffic_type": self.rng.randint(1, 20),
                "country": self.rng.choice(COUNTRIES),
                "other": self.rng.random() < 0.01,
                "visits": 0,
                "busy": False,
            }
            for k in range(1, pool + 1)
        ]
        self.sessions_started = 0
        self.sessions = [self._new_session() for _ in range(BATCH_SIZE)]
        self.headers = {"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"}

    def _new_session(self) -> Session:
        # A customer never has two visits at once.
        while True:
            c = self.rng.choice(self.customers)
            if not c["busy"]:
                break
        c["busy"] = True
        self.sessions_started += 1
        return Session(self.rng, self.prefix, self.sessions_started, c)

    @task
    def post_batch(self):
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        batch = []
        for i, s in enumerate(self.sessions):
            ev = s.next_event(now)
            if ev is None:
                s.customer["busy"] = False
                s = self.sessions[i] = self._new_session()
                ev = s.next_event(now)
            batch.append(ev)
        with self.client.post(
            self.target + "/v1/events", data=json.dumps(batch), headers=self.headers, name="/v1/events", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                body = resp.json()
            except ValueError:
                resp.failure("reply is not JSON")
                return
            if body.get("rejected"):
                resp.failure(f"rejected: {json.dumps(body['rejected'][:3])}")
            elif body.get("accepted", 0) + body.get("duplicates", 0) != len(batch):
                resp.failure(f"acknowledged {body.get('accepted')} + {body.get('duplicates')} of {len(batch)}")
            else:
                resp.success()
