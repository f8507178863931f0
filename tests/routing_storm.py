"""One process of the routing storm (tests/test_routing_concurrency.py); not a test itself.

Run as `python -m tests.routing_storm --worker N --visitors V --seed S` with DATABASE_URL and
REDIS_URL set. Each worker opens conversations for its visitors through the real message path
(which routes them), relays every outbox row through the Redis channel layer, and between
messages resolves conversations and flips agents between busy and online, so that routing,
freed slots and the waiting line all run at once in several processes. Bounded by count.
Prints one JSON line of what it did.
"""

from __future__ import annotations

import argparse
import json
import os
import random

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--visitors", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")
    django.setup()

    from asgiref.sync import async_to_sync
    from django.contrib.auth import get_user_model

    from agents.models import Agent, AgentStatus
    from agents.status import choose
    from chat import actions, assignment, delivery
    from chat.models import Conversation, Site

    def relay(recorded) -> None:
        for item in recorded:
            if item is not None:
                async_to_sync(delivery.relay)(item.outbox_id, item.sends)

    rng = random.Random(args.seed * 1000 + args.worker)
    site = Site.objects.get()
    agents = list(Agent.objects.select_related("user"))
    done = {"worker": args.worker, "posted": 0, "resolved": 0, "flips": 0, "filled": 0}
    for n in range(args.visitors):
        session = actions.start_visitor_session(
            site, None, ip="127.0.0.1", user_agent="storm", referrer="", page_url=""
        )
        posted = actions.post_visitor_message(
            session.visitor.pk, client_id=f"w{args.worker}-{n}", body=f"storm {n}"
        )
        relay([posted.recorded])
        done["posted"] += 1
        if n % 3 == 2:
            # An agent resolves one of their conversations: a slot frees, the line moves.
            mine = (
                Conversation.objects.filter(status="open", assignee__isnull=False)
                .order_by("?")
                .values_list("pk", "assignee_id")
                .first()
            )
            if mine is not None:
                user = get_user_model().objects.get(pk=mine[1])
                changed = actions.set_conversation_status(user, mine[0], "resolved")
                relay([changed.recorded])
                done["resolved"] += 1
                filled = assignment.fill_from_queue(assignment.site_pool(site.pk))
                done["filled"] += len(filled)
                relay(filled)
        if n % 5 == 4:
            agent = rng.choice(agents)
            current = Agent.objects.get(pk=agent.pk).status
            target = AgentStatus.ONLINE if current == AgentStatus.BUSY else AgentStatus.BUSY
            relay(choose(agent.pk, target, agent.user))
            done["flips"] += 1
    # Leave every agent online so the line can drain in the test's final check.
    for agent in agents:
        relay(choose(agent.pk, AgentStatus.ONLINE, agent.user))
    print(json.dumps(done))


if __name__ == "__main__":
    main()
