"""The example's data: items numbered by a counter, and accounts that transfer money."""

from django.db import models

ACCOUNTS = 100
START_BALANCE = 1_000_000
SEED_ITEMS = 1000


class Counter(models.Model):
    name = models.CharField(max_length=50, primary_key=True)
    value = models.IntegerField()


class Item(models.Model):
    name = models.CharField(max_length=100)
    seq = models.IntegerField(unique=True)


class Account(models.Model):
    balance = models.BigIntegerField()


class Transfer(models.Model):
    src = models.IntegerField()
    dst = models.IntegerField()
    amount = models.IntegerField()
