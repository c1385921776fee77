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
