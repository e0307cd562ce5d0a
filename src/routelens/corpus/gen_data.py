"""The `data` domain of the built-in corpus: machine-made records (CSV, JSON, logs, configs).

Structured text is where real MoE routers are known to specialise (digits, delimiters, keys that
repeat), and it looks nothing like code, prose or math, which makes it a useful fourth domain.
Everything is drawn from a seeded `random.Random` and small word lists below, so the same seed
gives the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

_FIRST = "Ada Alan Amara Bo Chen Dana Elif Emil Farah Grace Hana Ivan Jonas Kai Lena Lior Maya Mina Nia Omar Pablo Priya Quinn Rosa Sami Tara Uma Vera Wen Yusuf Zoe".split()
_LAST = "Abe Berg Costa Diaz Evans Fischer Garcia Haddad Ito Jensen Kim Lopez Moreau Novak Okafor Park Rossi Sato Silva Tanaka Ueda Varga Weber Yilmaz Zhou".split()
_CITIES = "Accra Berlin Bogota Cairo Chicago Dublin Hanoi Helsinki Jakarta Lagos Lima Lisbon Lyon Madrid Mumbai Nairobi Osaka Oslo Porto Quito Seoul Sydney Tunis Warsaw Zurich".split()
_PRODUCTS = "cable charger desk fan headset kettle keyboard lamp monitor mouse notebook printer router scanner speaker stand webcam".split()
_STATUSES = ["pending", "shipped", "delivered", "cancelled", "returned"]
_LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR"]
_PATHS = [
    "/",
    "/index.html",
    "/login",
    "/api/v1/users",
    "/api/v1/orders",
    "/static/app.js",
    "/static/style.css",
    "/health",
    "/search",
]
_METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
_HTTP_STATUS = [200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 500, 503]
_SERVICES = ["auth", "billing", "cache", "gateway", "indexer", "mailer", "scheduler", "worker"]
_MESSAGES = [
    "connection established",
    "request completed",
    "cache miss for key",
    "retrying after timeout",
    "queue length above threshold",
    "user session expired",
    "payment authorised",
    "job finished",
    "disk usage at",
    "failed to reach upstream",
    "configuration reloaded",
    "rate limit applied",
]


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(15, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@example.{rng.choice(['com', 'org', 'net'])}"


def _csv(rng: random.Random) -> str:
    kind = rng.choice(["orders", "people", "weather"])
    rows: list[str] = []
    if kind == "orders":
        rows.append("order_id,date,customer,product,quantity,unit_price,status")
        start = rng.randint(1000, 90000)
        for i in range(rng.randint(5, 25)):
            name, _ = _person(rng)
            price = f"{rng.randint(2, 400)}.{rng.randint(0, 99):02d}"
            rows.append(
                f"{start + i},{_date(rng)},{name},{rng.choice(_PRODUCTS)},{rng.randint(1, 12)},{price},{rng.choice(_STATUSES)}"
            )
    elif kind == "people":
        rows.append("id,name,email,city,age,score")
        for i in range(1, rng.randint(6, 25)):
            name, email = _person(rng)
            rows.append(f"{i},{name},{email},{rng.choice(_CITIES)},{rng.randint(18, 90)},{rng.randint(0, 100)}")
    else:
        city = rng.choice(_CITIES)
        rows.append("date,city,temp_min_c,temp_max_c,rain_mm,wind_kmh")
        for _ in range(rng.randint(5, 25)):
            low = rng.randint(-15, 25)
            rows.append(
                f"{_date(rng)},{city},{low},{low + rng.randint(2, 15)},{rng.randint(0, 40)}.{rng.randint(0, 9)},{rng.randint(0, 80)}"
            )
    return "\n".join(rows)


def _json(rng: random.Random) -> str:
    name, email = _person(rng)
    record = {
        "id": rng.randint(1, 10**6),
        "name": name,
        "email": email,
        "city": rng.choice(_CITIES),
        "active": rng.random() < 0.7,
        "created": f"{_date(rng)}T{_time(rng)}Z",
        "tags": rng.sample(_PRODUCTS, rng.randint(0, 3)),
        "orders": [
            {"product": rng.choice(_PRODUCTS), "quantity": rng.randint(1, 5), "status": rng.choice(_STATUSES)}
            for _ in range(rng.randint(0, 3))
        ],
    }
    if rng.random() < 0.5:
        return json.dumps(record, indent=2)
    # JSON Lines: several compact records
    lines = [json.dumps(record)]
    for _ in range(rng.randint(2, 10)):
        lines.append(
            json.dumps({"id": rng.randint(1, 10**6), "event": rng.choice(_MESSAGES), "ok": rng.random() < 0.8})
        )
    return "\n".join(lines)


def _access_log(rng: random.Random) -> str:
    day = f"{rng.randint(1, 28):02d}/{rng.choice(['Jan', 'Mar', 'May', 'Jul', 'Sep', 'Nov'])}/20{rng.randint(15, 24)}"
    lines = []
    for _ in range(rng.randint(5, 30)):
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        path = rng.choice(_PATHS)
        if path.startswith("/api") and rng.random() < 0.6:
            path += f"/{rng.randint(1, 9999)}"
        size = rng.randint(0, 50000)
        lines.append(
            f'{ip} - - [{day}:{_time(rng)} +0000] "{rng.choice(_METHODS)} {path} HTTP/1.1" {rng.choice(_HTTP_STATUS)} {size}'
        )
    return "\n".join(lines)


def _app_log(rng: random.Random) -> str:
    date = _date(rng)
    lines = []
    for _ in range(rng.randint(5, 30)):
        msg = rng.choice(_MESSAGES)
        if msg.endswith(("at", "key")):
            msg += f" {rng.randint(1, 99)}%" if msg.endswith("at") else f" user:{rng.randint(1, 9999)}"
        lines.append(
            f"{date}T{_time(rng)}.{rng.randint(0, 999):03d}Z {rng.choice(_LEVELS):<7} "
            f"[{rng.choice(_SERVICES)}-{rng.randint(1, 8)}] {msg} (took {rng.randint(1, 900)}ms)"
        )
    return "\n".join(lines)


def _ini(rng: random.Random) -> str:
    lines: list[str] = []
    for service in rng.sample(_SERVICES, rng.randint(1, 3)):
        lines.append(f"[{service}]")
        lines.append(f"host = {service}.internal")
        lines.append(f"port = {rng.randint(1024, 65535)}")
        lines.append(f"workers = {rng.randint(1, 32)}")
        lines.append(f"timeout_s = {rng.randint(1, 120)}")
        lines.append(f"log_level = {rng.choice(_LEVELS).lower()}")
        lines.append(f"enabled = {rng.choice(['true', 'false'])}")
    return "\n".join(lines)


_RECORD_KINDS: list[Callable[[random.Random], str]] = [_csv, _json, _access_log, _app_log, _ini]


def data_documents(rng: random.Random) -> Iterator[str]:
    """Endless documents, each one CSV table, JSON record(s), log excerpt or INI file."""
    while True:
        yield rng.choice(_RECORD_KINDS)(rng)
