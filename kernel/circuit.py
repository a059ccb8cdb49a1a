"""A circuit breaker per provider: stop calling what keeps failing, probe it again later.

closed --(failure_threshold consecutive failures)--> open
open --(reset_timeout elapsed)--> half-open: one probe call is let through
half-open --(probe succeeds)--> closed;  --(probe fails)--> open again
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ):
        self.failure_threshold = max(1, failure_threshold)
        self.reset_timeout = reset_timeout
        self.clock = clock  # time.monotonic; tests hand in a fake one
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.consecutive_failures = 0

    @property
    def state(self) -> CircuitState:
        """The state now; an open circuit whose cool-down is over reads as half-open."""
        if self._state is CircuitState.OPEN and self.clock() - self._opened_at >= self.reset_timeout:
            return CircuitState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.reset_timeout - (self.clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go to this provider now? In half-open, only one probe at a time."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self._probe_in_flight:
            return False
        self._probe_in_flight = True
        self._set(CircuitState.HALF_OPEN)
        return True

    def would_allow(self) -> bool:
        """Would `allow` let a call through now? (read only: a half-open probe is not taken)"""
        return self.state is CircuitState.CLOSED or (self.state is CircuitState.HALF_OPEN and not self._probe_in_flight)

    def release(self) -> None:
        """A probe `allow` gave that never reached the provider (a side door's admission, a deadline
        already passed): the next call may probe, and nothing is learnt of the provider."""
        self._probe_in_flight = False

    def record_success(self) -> None:
        """The provider answered (a client error such as INVALID_ARGUMENT counts: it is alive)."""
        self._probe_in_flight = False
        self.consecutive_failures = 0
        self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self.consecutive_failures += 1
        if self._state is CircuitState.HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change:
                self._on_change(state)
