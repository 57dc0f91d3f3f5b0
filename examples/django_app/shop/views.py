"""A small JSON API through Django's ORM: the same endpoints as the Flask and Starlette examples.

The write views read, then write, in one ``transaction.atomic()`` block: the case Django's
default (deferred) transactions get wrong under concurrent writers.  Database errors ("database
is locked") become 503 answers.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from functools import wraps
from typing import Any, Callable

import django
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_http_methods

from .models import SEED_ITEMS, START_BALANCE, Account, Counter, Item, Transfer


def busy_is_503(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except OperationalError as exc:
            return JsonResponse({"error": str(exc).split("\n")[0]}, status=503)

    return wrapper


def body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def health(request: HttpRequest) -> JsonResponse:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return JsonResponse({"ok": True, "mode": settings.MODE, "python": sys.version.split()[0], "gil": gil,
                         "sqlite": sqlite3.sqlite_version, "django": django.__version__})


@busy_is_503
def get_item(request: HttpRequest, item_id: int) -> JsonResponse:
    item = Item.objects.filter(pk=item_id).values("id", "name", "seq").first()
    if item is None:
        return JsonResponse({"error": "no such item"}, status=404)
    return JsonResponse(item)


@require_http_methods(["GET", "POST"])
@busy_is_503
def items(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        try:
            limit = min(max(int(request.GET.get("limit", 20)), 1), 100)
        except ValueError:
            limit = 20
        rows = list(Item.objects.order_by("-id").values("id", "name", "seq")[:limit])
        return JsonResponse({"items": rows})
    name = str(body(request).get("name", "item"))[:100]
    with transaction.atomic():  # read the counter, then insert and update
        counter = Counter.objects.get(name="items")
        seq = counter.value + 1
        item = Item.objects.create(name=name, seq=seq)
        counter.value = seq
        counter.save(update_fields=["value"])
    return JsonResponse({"id": item.id, "seq": seq}, status=201)


@require_http_methods(["POST"])
@busy_is_503
def transfer(request: HttpRequest) -> JsonResponse:
    data = body(request)
    try:
        src, dst, amount = int(data["from"]), int(data["to"]), int(data["amount"])
    except (KeyError, TypeError, ValueError):
        return JsonResponse({"error": "expected JSON {from, to, amount}"}, status=400)
    if amount <= 0 or src == dst:
        return JsonResponse({"error": "amount must be > 0 and from != to"}, status=400)
    with transaction.atomic():  # bank-style: read the balance, refuse an overdraft, move the money
        balance = Account.objects.filter(pk=src).values_list("balance", flat=True).first()
        if balance is None or not Account.objects.filter(pk=dst).exists():
            return JsonResponse({"error": "no such account"}, status=404)
        if balance < amount:
            return JsonResponse({"error": "insufficient funds", "balance": balance}, status=409)
        Account.objects.filter(pk=src).update(balance=F("balance") - amount)
        Account.objects.filter(pk=dst).update(balance=F("balance") + amount)
        Transfer.objects.create(src=src, dst=dst, amount=amount)
    return JsonResponse({"ok": True, "balance": balance - amount})


@busy_is_503
def stats(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:  # one statement: one snapshot, even while writes commit
        cursor.execute(
            "SELECT (SELECT count(*) FROM shop_item), (SELECT max(seq) FROM shop_item), "
            "(SELECT count(DISTINCT seq) FROM shop_item), (SELECT value FROM shop_counter WHERE name = 'items'), "
            "(SELECT count(*) FROM shop_account), (SELECT sum(balance) FROM shop_account), (SELECT count(*) FROM shop_transfer)"
        )
        items_, max_seq, distinct_seq, counter, accounts, total, transfers = cursor.fetchone()
    return JsonResponse({
        "mode": settings.MODE, "items": items_, "max_seq": max_seq, "distinct_seq": distinct_seq, "counter": counter,
        "accounts": accounts, "total_balance": total, "start_balance": accounts * START_BALANCE,
        "transfers": transfers, "seed_items": SEED_ITEMS,
    })

