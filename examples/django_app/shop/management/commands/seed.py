"""``python manage.py seed``: the example's starting data, once (run after ``migrate``)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from shop.models import ACCOUNTS, SEED_ITEMS, START_BALANCE, Account, Counter, Item


class Command(BaseCommand):
    help = "Seed items, their counter and the accounts (does nothing if already seeded)."

    def handle(self, *args: object, **options: object) -> None:
        with transaction.atomic():
            if Counter.objects.exists():
                return
            Item.objects.bulk_create(Item(name=f"item {i}", seq=i) for i in range(1, SEED_ITEMS + 1))
            Counter.objects.create(name="items", value=SEED_ITEMS)
            Account.objects.bulk_create(Account(id=i, balance=START_BALANCE) for i in range(1, ACCOUNTS + 1))
        self.stdout.write(f"seeded {SEED_ITEMS} items and {ACCOUNTS} accounts")
