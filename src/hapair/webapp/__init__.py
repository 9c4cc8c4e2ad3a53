"""The demo web app that runs on each web node (the seed's NodeJS hello-world).

``python -m hapair.webapp --node web1 --address 198.18.1.1`` serves a page that says which web
node answered, through which load balancer, for which client, and how many pages this process
has served. See :mod:`hapair.webapp.server` for the HTTP behaviour.
"""

from __future__ import annotations

from hapair.webapp.page import Page
from hapair.webapp.server import WebConfig, WebServer, serve

__all__ = ["Page", "WebConfig", "WebServer", "serve"]
