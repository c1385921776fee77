"""The tables ``bench/schema.py`` builds, as Django sees them (never migrated:
the bench builds them itself). The planner reads the real keys from
``pg_constraint``; the models give configs their labels and field names."""

from __future__ import annotations

from django.db import models


class Customer(models.Model):
    id = models.BigIntegerField(primary_key=True)
    name = models.TextField()
    email = models.TextField(unique=True)
    country = models.CharField(max_length=2, null=True)
    created_at = models.DateTimeField()
    profile = models.JSONField()

    class Meta:
        managed = False
        db_table = "customers"


class Product(models.Model):
    id = models.BigIntegerField(primary_key=True)
    sku = models.TextField(unique=True)
    title = models.TextField()
    description = models.TextField(null=True)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    attributes = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = "products"


class Order(models.Model):
    id = models.BigIntegerField(primary_key=True)
    customer = models.ForeignKey(Customer, models.DO_NOTHING)
    created_at = models.DateTimeField()
    status = models.TextField()
    total = models.DecimalField(max_digits=12, decimal_places=2)
    shipping = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = "orders"


class OrderItem(models.Model):
    id = models.BigIntegerField(primary_key=True)
    order = models.ForeignKey(Order, models.DO_NOTHING)
    product = models.ForeignKey(Product, models.DO_NOTHING)
    quantity = models.IntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    discount = models.DecimalField(max_digits=5, decimal_places=2, null=True)

    class Meta:
        managed = False
        db_table = "order_items"


class Event(models.Model):
    id = models.BigIntegerField(primary_key=True)
    occurred_at = models.DateTimeField()
    kind = models.TextField()
    customer = models.ForeignKey(Customer, models.DO_NOTHING, null=True)
    payload = models.JSONField()
    note = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "events"
