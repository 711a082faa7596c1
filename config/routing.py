from django.urls import path

from marketdata.api.consumer import MarketConsumer
from portfolio.consumers import PortfolioConsumer

websocket_urlpatterns = [
    path("ws/portfolio/", PortfolioConsumer.as_asgi()),
    path("ws/v1/market", MarketConsumer.as_asgi()),
]
