from django.db import models


class Order(models.Model):
    customer = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="placed")


class Shipment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    shipped_by = models.CharField(max_length=100)
