"""Checkpoints published on the event bus: what every kernel of a cluster announced of its log.

Each kernel signs tree heads of its own audit log and publishes them as `audit.checkpoint`
events (plugin.py). Whoever can read the shared bus holds them all, as Certificate Transparency's
monitors hold logs' signed tree heads: a kernel that later rewrites or cuts its log, even with its
own signing key, no longer matches what it published. Only events whose publisher (from the
credential, never the request) is the governance plugin count.
"""

from __future__ import annotations

from collections import defaultdict

import grpc
from google.protobuf import json_format

from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
from cortex.contracts.governance.v1 import governance_pb2 as pb

TOPIC = "audit.checkpoint"
PUBLISHER = "plugin:governance"


def read_published(client) -> tuple[dict[bytes, list[pb.Checkpoint]], int]:
    """The checkpoints on the bus the kernel behind `client` serves, by the public key that
    signed them; and how many events under the topic were not a governance plugin's checkpoint."""
    stub = events_pb2_grpc.EventServiceStub(client.channel)
    by_key: dict[bytes, list[pb.Checkpoint]] = defaultdict(list)
    ignored = 0
    request = events_pb2.SubscribeRequest(topics=[TOPIC], until_latest=True)
    try:
        for message in stub.Subscribe(request, timeout=600, metadata=client.metadata):
            event = message.event
            try:
                checkpoint = json_format.Parse(event.data, pb.Checkpoint())
            except json_format.ParseError:
                checkpoint = None
            if event.publisher != PUBLISHER or checkpoint is None or not checkpoint.public_key:
                ignored += 1
                continue
            by_key[checkpoint.public_key].append(checkpoint)
    except grpc.RpcError as exc:
        raise client.error(exc) from None
    return dict(by_key), ignored
