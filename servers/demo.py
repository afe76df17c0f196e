"""A sample workspace, built offline and deterministically: ``dataproducts demo``.

Layout written into the target directory::

    dataproducts.yaml                  connections, principals (token hashes), limits
    data/shop.db                       OLTP shop in SQLite: customers, products, orders, order_lines
    data/analytics/order_facts.parquet one row per order line, denormalised (DuckDB connection)
    data/analytics/daily_sales.csv     revenue per day, region and category (DuckDB connection)
    contracts/*.yaml                   five product contracts with policies, metrics and checks
    .dataproducts/demo.json            marks the folder as a demo workspace (rebuilding is allowed)
    .dataproducts/demo-tokens.txt      the principals' bearer tokens, mode 0600

All people, e-mail addresses (``example.org``/``.com``/``.net``, reserved by RFC 2606) and phone
numbers are synthetic. The data depend only on ``seed`` and ``as_of``; the hash salt and the bearer
tokens are fresh secrets on every build.
"""

from __future__ import annotations

import csv
import json
import os
import random
import secrets
import shutil
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from catalog.contract import ProductContract
from catalog.errors import ConfigError
from servers.settings import CONFIG_FILE, hash_token

__all__ = ["DEMO_PRINCIPALS", "DemoWorkspace", "build_demo_workspace"]

MARKER = ".dataproducts/demo.json"
_CONTRACTS_DIR = Path(__file__).with_name("demo_contracts")
_DOCS_DIR = Path(__file__).with_name("demo_docs")
CONTRACT_NAMES = (
    "shop.customers",
    "shop.orders",
    "shop.order_lines",
    "shop.reviews",
    "analytics.order_facts",
    "analytics.daily_sales",
    "docs.handbook",
    "shop.fx_rates",
)
TOKENS_FILE = ".dataproducts/demo-tokens.txt"
_GENERATED = ("data", "contracts", ".dataproducts", CONFIG_FILE)

DEMO_PRINCIPALS: dict[str, list[str]] = {
    "ana": ["analyst", "sales-eu"],  # masked PII, EU orders only
    "sam": ["analyst", "pii-reader", "sales"],  # raw PII, all orders
}

_COUNTRIES: dict[str, tuple[str, list[str], str]] = {  # code -> (region, cities, phone prefix)
    "DE": ("EU", ["Berlin", "Hamburg", "Munich", "Cologne"], "+49"),
    "FR": ("EU", ["Paris", "Lyon", "Marseille", "Lille"], "+33"),
    "NL": ("EU", ["Amsterdam", "Rotterdam", "Utrecht"], "+31"),
    "ES": ("EU", ["Madrid", "Barcelona", "Valencia"], "+34"),
    "IT": ("EU", ["Milan", "Rome", "Turin"], "+39"),
    "IE": ("EU", ["Dublin", "Cork"], "+353"),
    "SE": ("EU", ["Stockholm", "Gothenburg"], "+46"),
    "US": ("US", ["New York", "Chicago", "Austin", "Seattle", "Denver"], "+1"),
    "JP": ("APAC", ["Tokyo", "Osaka"], "+81"),
    "AU": ("APAC", ["Sydney", "Melbourne"], "+61"),
    "SG": ("APAC", ["Singapore"], "+65"),
    "IN": ("APAC", ["Bengaluru", "Mumbai"], "+91"),
}
_COUNTRY_WEIGHTS = [14, 10, 6, 6, 5, 3, 3, 26, 8, 6, 4, 9]
_FIRST = (
    "Alex Sam Robin Kim Jo Noor Mika Lou Ari Jules Dana Rene Toni Kai Luca Emil Nina Lena Mara Ivo "
    "Pia Olle Femi Tala Ines Remy Suki Nils Vera Hugo Ada Milo Yara Otis Zoe Teo Lise Bram Cleo Ravi"
).split()
_LAST = (
    "Ashdown Brightwater Calloway Dunmore Elsworth Fairbanks Greystone Holloway Ironwood Juniper "
    "Kettering Larkspur Merriweather Northcott Oakhurst Pemberton Quarry Ravensworth Silverton Thistle "
    "Underhill Vantage Westbrook Yarrow Zephyr Ambler Birchwood Coldstream Driftwood Emberly"
).split()
_CATALOG: dict[str, tuple[str, list[str], list[str], tuple[int, int]]] = {
    # category -> (sku prefix, adjectives, nouns, price range in EUR)
    "coffee": (
        "COF",
        ["Dark", "Single-origin", "Decaf", "House"],
        ["Roast 250g", "Beans 1kg", "Capsules x20"],
        (6, 34),
    ),
    "tea": ("TEA", ["Green", "Earl Grey", "Rooibos", "Chai"], ["Loose 100g", "Bags x40", "Tin 200g"], (4, 22)),
    "kitchen": ("KIT", ["Steel", "Ceramic", "Glass", "Oak"], ["Mug", "Pour-over", "Grinder", "Kettle"], (9, 149)),
    "books": (
        "BOK",
        ["Pocket", "Illustrated", "Collected"],
        ["Brewing Guide", "Atlas of Tea", "Cafe Stories"],
        (8, 45),
    ),
    "outdoor": ("OUT", ["Trail", "Camp", "Insulated"], ["Flask", "Cup Set", "Stove"], (12, 89)),
}
_CHANNELS = (["web", "mobile_app", "marketplace"], [55, 30, 15])


@dataclass
class DemoWorkspace:
    """What :func:`build_demo_workspace` built. ``tokens`` holds plaintext bearer tokens by principal."""

    path: Path
    config_path: Path
    contract_paths: list[Path]
    tokens: dict[str, str] = field(repr=False)


def build_demo_workspace(target: Path, *, seed: int = 7, as_of: datetime | None = None) -> DemoWorkspace:
    """Build the demo workspace in ``target`` (created if missing) and return where things are.

    ``as_of`` (UTC; default: now, truncated to the hour) is the end of the one-year order history, so
    freshness checks pass on a fresh build; the same ``seed`` and ``as_of`` give identical data.

    Raises:
        ConfigError: ``target`` is a file, or a non-empty folder that is not a previous demo workspace.
    """
    target = Path(target).expanduser().resolve()
    end = (as_of or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    _prepare_target(target)
    rng = random.Random(seed)
    shop = _generate_shop(rng, end)
    (target / "data" / "analytics").mkdir(parents=True)
    _write_sqlite(target / "data" / "shop.db", shop)
    _write_fx_rates(target / "data" / "shop.db", end)
    _write_analytics(target / "data" / "analytics", shop)
    shutil.copytree(_DOCS_DIR, target / "data" / "handbook")
    contract_paths = _write_contracts(target / "contracts")
    tokens = {name: f"dp_{name}_{secrets.token_urlsafe(24)}" for name in DEMO_PRINCIPALS}
    config_path = target / CONFIG_FILE
    config_path.write_text(_config_yaml(tokens, salt=secrets.token_hex(32)), encoding="utf-8")
    _write_private(target / TOKENS_FILE, _tokens_text(tokens))
    marker = {"kind": "dataproducts-demo", "seed": seed, "as_of": end.isoformat()}
    (target / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return DemoWorkspace(path=target, config_path=config_path, contract_paths=contract_paths, tokens=tokens)


def _prepare_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file; choose a new or empty folder for the demo workspace")
    if target.is_dir() and any(target.iterdir()):
        if not (target / MARKER).is_file():
            raise ConfigError(
                f"{target} is not empty and is not a dataproducts demo workspace (no {MARKER}); "
                "refusing to overwrite it: choose a new or empty folder"
            )
        for name in _GENERATED:
            path = target / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    (target / ".dataproducts").mkdir(parents=True, exist_ok=True)


# --- data --------------------------------------------------------------------------------------------------


@dataclass
class _Shop:
    customers: list[tuple[int, str, str, str, str, str, str, int]] = field(default_factory=list)
    products: list[tuple[str, str, str, Decimal]] = field(default_factory=list)
    orders: list[tuple[int, int, datetime, str, str, str]] = field(default_factory=list)
    lines: list[tuple[int, int, str, int, Decimal, Decimal]] = field(default_factory=list)
    reviews: list[tuple[int, int, str, int, str, str, str, str]] = field(default_factory=list)


def _generate_shop(rng: random.Random, end: datetime) -> _Shop:
    shop = _Shop()
    for category, (prefix, adjectives, nouns, (low, high)) in _CATALOG.items():
        n = 0
        for adjective in adjectives:
            for noun in nouns:
                n += 1
                price = Decimal(rng.randint(low * 100, high * 100) // 50 * 50 - 1) / 100
                shop.products.append((f"{prefix}-{n:03d}", f"{adjective} {noun}", category, price))
    codes = list(_COUNTRIES)
    start = end - timedelta(days=365)
    for customer_id in range(1, 1201):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        country = rng.choices(codes, _COUNTRY_WEIGHTS)[0]
        _region, cities, dial = _COUNTRIES[country]
        domain = rng.choice(["example.org", "example.com", "example.net"])
        phone = f"{dial} 555 {rng.randint(0, 9999):04d} {rng.randint(0, 999):03d}"
        signup = (start - timedelta(days=rng.randint(0, 900))).date().isoformat()
        email = f"{first}.{last}.{customer_id}@{domain}".lower()
        opt_in = int(rng.random() < 0.42)
        shop.customers.append(
            (customer_id, f"{first} {last}", email, phone, country, rng.choice(cities), signup, opt_in)
        )
    # Orders: growth over the year (later days are busier), ids follow booking time.
    seconds = int((end - start).total_seconds())
    times = sorted(start + timedelta(seconds=int(seconds * rng.random() ** 0.8)) for _ in range(4000))
    skus = [p[0] for p in shop.products]
    prices = {p[0]: p[3] for p in shop.products}
    for i, ordered_at in enumerate(times):
        order_id = 100_001 + i
        customer = rng.choice(shop.customers)
        region = _COUNTRIES[customer[4]][0]
        shop.orders.append(
            (order_id, customer[0], ordered_at, _status(rng, end - ordered_at), region, rng.choices(*_CHANNELS)[0])
        )
        for line_no, sku in enumerate(rng.sample(skus, rng.choices([1, 2, 3, 4, 5], [35, 30, 18, 11, 6])[0]), 1):
            quantity = rng.choices([1, 2, 3, 4, 6], [60, 22, 9, 6, 3])[0]
            unit_price = (
                prices[sku] if rng.random() > 0.15 else (prices[sku] * Decimal("0.9")).quantize(Decimal("0.01"))
            )
            shop.lines.append((order_id, line_no, sku, quantity, unit_price, unit_price * quantity))
    _generate_reviews(rng, shop, end)
    return shop


_PRAISE = [
    "{name} tastes wonderful and arrived well packed.",
    "Great value: the {name} is better than what I bought in stores.",
    "Delivery was fast and the {name} was exactly as described.",
    "I reorder the {name} every month, the quality is consistent.",
]
_COMPLAINTS = [
    "The {name} arrived damaged, the box was crushed during shipping.",
    "Delivery took almost two weeks and nobody answered my e-mails about the {name}.",
    "The {name} was stale, the roast date was months old.",
    "Wrong item: I ordered the {name} and received something else, the return took ages.",
    "The {name} stopped working after a week; support promised a replacement.",
]
_NEUTRAL = [
    "The {name} is fine, nothing special for the price.",
    "Decent {name}, but the packaging could use less plastic.",
]


def _generate_reviews(rng: random.Random, shop: _Shop, end: datetime) -> None:
    """Free-text product reviews of delivered orders (the text the demo indexes for search and ask)."""
    names = {p[0]: p[1] for p in shop.products}
    emails = {c[0]: c[2] for c in shop.customers}
    delivered = [o for o in shop.orders if o[3] == "delivered"]
    lines_by_order: dict[int, list[str]] = defaultdict(list)
    for line in shop.lines:
        lines_by_order[line[0]].append(line[2])
    for review_id, order in enumerate(rng.sample(delivered, min(1500, len(delivered))), start=1):
        sku = rng.choice(lines_by_order[order[0]])
        rating = rng.choices([5, 4, 3, 2, 1], [40, 25, 12, 10, 13])[0]
        pool = _PRAISE if rating >= 4 else _NEUTRAL if rating == 3 else _COMPLAINTS
        body = " ".join(t.format(name=names[sku].lower()) for t in rng.sample(pool, 2 if len(pool) > 2 else 1))
        reviewed_at = min(order[2] + timedelta(days=rng.randint(3, 20)), end)
        shop.reviews.append(
            (
                review_id,
                order[0],
                sku,
                rating,
                order[4],
                reviewed_at.strftime("%Y-%m-%d %H:%M:%S"),
                emails[order[1]],
                body,
            )
        )


def _status(rng: random.Random, age: timedelta) -> str:
    if age < timedelta(days=1):
        return rng.choice(["placed", "paid"])
    if age < timedelta(days=5):
        return rng.choices(["paid", "shipped", "cancelled"], [20, 75, 5])[0]
    return rng.choices(["delivered", "cancelled", "returned"], [92, 5, 3])[0]


_SHOP_DDL = """
CREATE TABLE customers (
    customer_id      INTEGER PRIMARY KEY,
    full_name        TEXT NOT NULL,
    email            TEXT NOT NULL UNIQUE,
    phone            TEXT,
    country          TEXT NOT NULL,          -- ISO 3166-1 alpha-2
    city             TEXT NOT NULL,
    signup_date      DATE NOT NULL,
    marketing_opt_in BOOLEAN NOT NULL CHECK (marketing_opt_in IN (0, 1))
);
CREATE TABLE products (
    sku        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    category   TEXT NOT NULL,
    unit_price NUMERIC(10, 2) NOT NULL       -- EUR, current list price
);
CREATE TABLE orders (
    order_id    INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    ordered_at  TIMESTAMP NOT NULL,          -- UTC, 'YYYY-MM-DD HH:MM:SS'
    status      TEXT NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    region      TEXT NOT NULL CHECK (region IN ('EU', 'US', 'APAC')),
    channel     TEXT NOT NULL
);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_ordered_at ON orders (ordered_at);
CREATE TABLE order_lines (
    order_id   INTEGER NOT NULL REFERENCES orders (order_id),
    line_no    INTEGER NOT NULL,
    sku        TEXT NOT NULL REFERENCES products (sku),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price NUMERIC(10, 2) NOT NULL,      -- EUR, price charged per unit
    amount     NUMERIC(10, 2) NOT NULL,      -- EUR, quantity * unit_price
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE reviews (
    review_id      INTEGER PRIMARY KEY,
    order_id       INTEGER NOT NULL REFERENCES orders (order_id),
    sku            TEXT NOT NULL REFERENCES products (sku),
    rating         INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    region         TEXT NOT NULL,               -- sales region of the order
    reviewed_at    TEXT NOT NULL,               -- UTC, 'YYYY-MM-DD HH:MM:SS'
    reviewer_email TEXT NOT NULL,
    body           TEXT NOT NULL
);
"""


def _write_sqlite(path: Path, shop: _Shop) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SHOP_DDL)
        with conn:
            conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?)", shop.customers)
            conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", [(*p[:3], float(p[3])) for p in shop.products])
            conn.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
                [(o[0], o[1], o[2].strftime("%Y-%m-%d %H:%M:%S"), *o[3:]) for o in shop.orders],
            )
            conn.executemany(
                "INSERT INTO order_lines VALUES (?, ?, ?, ?, ?, ?)",
                [(*line[:4], float(line[4]), float(line[5])) for line in shop.lines],
            )
            conn.executemany("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)", shop.reviews)
    finally:
        conn.close()


#: Days before the demo's end when the exchange-rate feed stopped: shop.fx_rates is stale on purpose.
FX_FEED_STOPPED_DAYS = 45
_FX_BASE = {"USD": 1.08, "GBP": 0.86, "JPY": 161.0}


def _write_fx_rates(path: Path, end: datetime) -> None:
    """60 days of daily rates that stop :data:`FX_FEED_STOPPED_DAYS` days before ``end`` (deterministic)."""
    last = (end - timedelta(days=FX_FEED_STOPPED_DAYS)).date()
    rows = []
    for back in range(60):
        day = last - timedelta(days=back)
        published = datetime.combine(day, datetime.min.time()) + timedelta(hours=16)
        for currency, base in _FX_BASE.items():
            rate = round(base * (1 + 0.01 * ((back * 7 + len(currency)) % 5 - 2) / 2), 2)
            rows.append((day.isoformat(), currency, rate, published.strftime("%Y-%m-%d %H:%M:%S")))
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "CREATE TABLE fx_rates (rate_date DATE NOT NULL, currency TEXT NOT NULL, "
                "eur_rate NUMERIC(10, 2) NOT NULL, published_at TIMESTAMP NOT NULL, PRIMARY KEY (rate_date, currency))"
            )
            conn.executemany("INSERT INTO fx_rates VALUES (?, ?, ?, ?)", rows)
    finally:
        conn.close()


def _write_analytics(folder: Path, shop: _Shop) -> None:
    orders = {o[0]: o for o in shop.orders}
    customers = {c[0]: c for c in shop.customers}
    categories = {p[0]: p[2] for p in shop.products}
    money = pa.decimal128(12, 2)
    rows: dict[str, list[object]] = defaultdict(list)
    daily: dict[tuple[date, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    seen: set[tuple[date, str, str, int]] = set()
    for order_id, line_no, sku, quantity, unit_price, amount in shop.lines:
        _, customer_id, ordered_at, status, region, channel = orders[order_id]
        values = {
            "order_id": order_id,
            "line_no": line_no,
            "ordered_at": ordered_at,
            "ordered_date": ordered_at.date(),
            "status": status,
            "region": region,
            "channel": channel,
            "customer_id": customer_id,
            "customer_country": customers[customer_id][4],
            "sku": sku,
            "category": categories[sku],
            "quantity": quantity,
            "unit_price": unit_price,
            "amount": amount,
        }
        for key, value in values.items():
            rows[key].append(value)
        if status not in ("cancelled", "returned"):
            cell = (ordered_at.date(), region, categories[sku])
            totals = daily[cell]
            totals[0] += 0 if (*cell, order_id) in seen else 1
            totals[1] += quantity
            totals[2] += amount
            seen.add((*cell, order_id))
    schema = pa.schema(
        [
            ("order_id", pa.int64()),
            ("line_no", pa.int32()),
            ("ordered_at", pa.timestamp("us")),
            ("ordered_date", pa.date32()),
            ("status", pa.string()),
            ("region", pa.string()),
            ("channel", pa.string()),
            ("customer_id", pa.int64()),
            ("customer_country", pa.string()),
            ("sku", pa.string()),
            ("category", pa.string()),
            ("quantity", pa.int32()),
            ("unit_price", money),
            ("amount", money),
        ]
    )
    pq.write_table(pa.table(rows, schema=schema), folder / "order_facts.parquet", compression="zstd")
    with (folder / "daily_sales.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sales_date", "region", "category", "orders", "units", "revenue"])
        for (day, region, category), (n_orders, units, revenue) in sorted(daily.items()):
            writer.writerow([day.isoformat(), region, category, n_orders, units, f"{revenue:.2f}"])


# --- contracts, configuration, tokens --------------------------------------------------------------------


def _write_contracts(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for name in CONTRACT_NAMES:
        text = (_CONTRACTS_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        ProductContract.model_validate(yaml.safe_load(text))  # a broken demo contract is our bug: fail loudly
        path = folder / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _config_yaml(tokens: dict[str, str], *, salt: str) -> str:
    principals = "\n".join(
        f"  - name: {name}\n    roles: [{', '.join(roles)}]\n    token_sha256: {hash_token(tokens[name])}"
        for name, roles in DEMO_PRINCIPALS.items()
    )
    return f"""\
# dataproducts demo workspace, generated by `dataproducts demo`. Synthetic data only.
# Relative paths and sqlite:/// URLs resolve against this file's folder.

registry_url: sqlite:///.dataproducts/registry.db

# Salt of hash masking. A demo is the one place where a secret is inlined in this file; in a real
# workspace write `hash_salt: {{$env: DATAPRODUCTS_HASH_SALT}}` and keep the value out of version control.
hash_salt: {salt}

connections:
  shop:          # the OLTP shop database
    kind: sqlite
    url: sqlite:///data/shop.db
  analytics:     # Parquet/CSV files, queried in place by DuckDB (view name -> file)
    kind: duckdb
    files:
      order_facts: data/analytics/order_facts.parquet
      daily_sales: data/analytics/daily_sales.csv
  docs:          # the customer-service handbook: one row per Markdown file
    kind: duckdb
    files:
      handbook: data/handbook/*.md

# Callers. Only the sha256 of each bearer token is stored; the tokens are in {TOKENS_FILE}.
#   ana: analyst in the EU sales team: sees masked PII and EU orders only.
#   sam: analyst with PII clearance: sees raw PII and every region.
principals:
{principals}

stdio_principal: ana   # who a stdio (local) MCP session acts as

limits: {{max_rows: 1000, max_bytes: 4000000, timeout_s: 30}}

server: {{host: 127.0.0.1, port: 8765, path: /mcp}}
"""


def _tokens_text(tokens: dict[str, str]) -> str:
    lines = ["# Bearer tokens of the demo principals (HTTP: `Authorization: Bearer <token>`). Keep private."]
    lines += [f"{name}\t{token}" for name, token in tokens.items()]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
