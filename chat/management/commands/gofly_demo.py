"""Create the demo site and the demo agent once; later runs change nothing."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from agents.models import Agent
from chat.models import Site
from nlp import starter, training
from nlp.models import ModelVersion

DEMO_USERNAME = "demo"
DEMO_SITE_NAME = "Demo shop"


class Command(BaseCommand):
    help = (
        "Create the demo site and the demo agent (username 'demo') if they do not exist, and give "
        "the site the starter bot (trained once)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--no-bot", action="store_true", help="Leave the bot out: every visitor gets a human."
        )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            site, site_created = Site.objects.get_or_create(
                name=DEMO_SITE_NAME,
                defaults={
                    "widget_title": "Demo shop support",
                    "welcome_message": "Hi! Ask us anything about your order.",
                },
            )
            user_model = get_user_model()
            user = user_model.objects.filter(username=DEMO_USERNAME).first()
            password = None
            if user is None:
                password = os.environ.get("GOFLY_DEMO_PASSWORD") or secrets.token_urlsafe(12)
                # Superuser so the demo account can also open Django admin.
                user = user_model.objects.create_superuser(
                    DEMO_USERNAME, email="demo@example.com", password=password
                )
            agent, _ = Agent.objects.get_or_create(user=user, defaults={"display_name": "Demo"})
            agent.sites.add(site)
        if site_created:
            self.stdout.write(f"Created site {site.name!r} with key {site.key}")
        if password is not None:
            shown = (
                "(from GOFLY_DEMO_PASSWORD)" if os.environ.get("GOFLY_DEMO_PASSWORD") else password
            )
            self.stdout.write(
                self.style.SUCCESS(f"Demo agent: username {DEMO_USERNAME}, password {shown}")
            )
            if not os.environ.get("GOFLY_DEMO_PASSWORD"):
                self.stdout.write("This password is shown only once; keep it.")
        if not options["no_bot"] and not ModelVersion.objects.filter(site=site).exists():
            starter.load_starter(site)
            version = training.train_site(site.pk)
            self.stdout.write(
                f"Starter bot trained: v{version.number}, {version.state}, "
                f"{version.examples} examples, {version.train_seconds} s"
            )
