"""The endpoint table a mode's verdicts index."""

from __future__ import annotations


class EndpointTable(list[str]):
    """Endpoints ("ip:port") in the order first seen. It only grows, so a verdict's
    ``endpoint`` index keeps its meaning across syncs; ``intern`` gives an endpoint's
    index, appending it the first time."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[str, int] = {}

    def intern(self, endpoint: str) -> int:
        idx = self._index.get(endpoint)
        if idx is None:
            idx = self._index[endpoint] = len(self)
            self.append(endpoint)
        return idx
