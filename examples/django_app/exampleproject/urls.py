from django.urls import path

from shop import views

urlpatterns = [
    path("health", views.health),
    path("items", views.items),
    path("items/<int:item_id>", views.get_item),
    path("transfer", views.transfer),
    path("stats", views.stats),
]
