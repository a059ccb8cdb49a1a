"""Data labels ("private"): which a call carries, and which data it got back carries.

A label says where data may go (builtin/private-stays-local: never to a remote provider). It
travels with the data, not only with the request that first named it:

- a call carries the labels of its request (its `tags` and `labels` fields, the x-cortex-labels
  header) and those of the call it was made for (a plugin's nested call, a plan step);
- what a nested call returns is data its caller now holds: the labels in the response (every
  `labels` field, at any depth: a recalled memory's, an answer prompt's) and those the nested call
  itself gathered are added to the caller's, so its next calls (the Generate prompt quoting a
  private memory) carry them too. Conservative on purpose: a run that read a private memory keeps
  its later calls local, whichever field it quotes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import aclosing
from functools import lru_cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from ..call import LABELS_HEADER, Call

_MAX_LABEL = 200  # a label is a name (the contracts' bound); longer strings in such a field are not labels
# messages whose `labels` describe data rather than carry it: a policy rule's, an audited call's
DESCRIBING = frozenset({"cortex.governance.v1.Rule", "cortex.governance.v1.CallDescription"})


def request_labels(request: Any, metadata: Iterable[tuple[str, str]] = ()) -> set[str]:
    """The labels a request names: its top-level `tags`, every `labels` field at any depth (the
    memories an ExtractAnswer request quotes carry theirs) and the x-cortex-labels header."""
    labels = labels_in(request)
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    tags = fields.get("tags")  # a request's own tags are its labels (Store: tag "private")
    if tags is not None and tags.is_repeated and tags.type == FieldDescriptor.TYPE_STRING:
        labels.update(v for v in request.tags if v and len(v) <= _MAX_LABEL)
    for key, value in metadata:
        if key == LABELS_HEADER:
            labels.update(v.strip() for v in value.split(",") if v.strip())
    return labels


def labels_in(message: Any) -> set[str]:
    """Every label a message (a response, a request) carries: the strings of each repeated `labels`
    field, at any depth."""
    labels: set[str] = set()
    descriptor = getattr(message, "DESCRIPTOR", None)
    if isinstance(descriptor, Descriptor) and _may_hold_labels(descriptor):
        _collect(message, labels)
    return labels


def _collect(message: Any, labels: set[str]) -> None:
    for field, value in message.ListFields():  # set fields only: cheap on sparse messages
        if field.message_type is None:
            if field.name == "labels" and field.is_repeated and field.type == FieldDescriptor.TYPE_STRING:
                labels.update(v for v in value if v and len(v) <= _MAX_LABEL)
        elif _may_hold_labels(field.message_type):
            if field.message_type.GetOptions().map_entry:
                for item in value.values():
                    if hasattr(item, "ListFields"):
                        _collect(item, labels)
            elif field.is_repeated:
                for item in value:
                    _collect(item, labels)
            else:
                _collect(value, labels)


@lru_cache(maxsize=4096)
def _may_hold_labels(descriptor: Descriptor, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message of this type can hold a `labels` field anywhere (types that cannot are
    never walked: most responses)."""
    if descriptor.full_name in _seen or descriptor.full_name in DESCRIBING:
        return False
    seen = _seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.message_type is None:
            if field.name == "labels" and field.type == FieldDescriptor.TYPE_STRING:
                return True
        elif _may_hold_labels(field.message_type, seen):
            return True
    return False


def holds(serving: Call | None, call: Call, response: Any) -> Any:
    """What nested `call` returned is data the call it was made for (`serving`) now holds: that
    call carries its labels on, and those `call` gathered from its own nested calls (not those of
    `call`'s request: the caller gave them, and a bulk job's every batch would pile up on it)."""
    if serving is not None and (got := labels_in(response) | call.gathered):
        serving.gathered |= got
        serving.labels |= got
    return response


async def returned(serving: Call | None, call: Call, answer: Awaitable[Any]) -> Any:
    """A unary nested call's response, once it comes (`holds`)."""
    return holds(serving, call, await answer)


async def streamed(serving: Call | None, call: Call, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A streaming nested call's messages, each as it comes (`holds`)."""
    async with aclosing(stream) as messages:  # type: ignore[type-var]
        async for message in messages:
            yield holds(serving, call, message)
