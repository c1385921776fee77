from django.contrib.contenttypes.fields import GenericForeignKey
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Book(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    title = models.CharField(max_length=200)
    tags = models.ManyToManyField(Tag, blank=True)


class Secret(models.Model):
    value = models.CharField(max_length=100)


class Mark(models.Model):
    """Rows written by the test hooks, to see which database a hook ran on."""

    note = models.CharField(max_length=100)


# A small shop for the scrub and subset tests: a root (Order), tables below it
# (OrderItem, the order/tag many-to-many), above it (Customer, Product, Tag),
# beside it (Address), a self-reference and a cycle (Customer.referred_by,
# Customer.last_order).


class Customer(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField(unique=True)
    phone = models.CharField(max_length=30, null=True, blank=True)
    notes = models.TextField(blank=True, default="")
    profile = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    referred_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    last_order = models.ForeignKey(
        "Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )


class Address(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    street = models.CharField(max_length=200)


class Product(models.Model):
    name = models.CharField(max_length=100)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    created = models.DateTimeField()
    tags = models.ManyToManyField(Tag, blank=True)


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    quantity = models.IntegerField(default=1)


class Reading(models.Model):
    """A partitioned table's model (the test makes the table): scrub and subset
    rules refuse it."""

    taken = models.DateField()
    value = models.TextField()

    class Meta:
        managed = False
        db_table = "pgclone_part_reading"


class Ledger(models.Model):
    """A legacy table's model (the test makes the table, with a char(6) code):
    what an sql rule's output is cast to."""

    code = models.CharField(max_length=6)
    amount = models.DecimalField(max_digits=5, decimal_places=2)
    memo = models.TextField()

    class Meta:
        managed = False
        db_table = "pgclone_legacy_ledger"


class Note(models.Model):
    """A note on a row of any model: a generic relation, whose object id is
    text (as Django's admin log and comments keep it). Subsets follow it."""

    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.CASCADE)
    object_id = models.CharField(max_length=40)
    target = GenericForeignKey("content_type", "object_id")
