"""One way to reach any model: an OpenAI-compatible endpoint or an in-process transformers model.

`connect(...)` returns a `ChatClient` (concurrency, retries, content cache, accounting) over one backend.
"""
from .client import ChatClient, connect, connect_function, run_sync
from .errors import PermanentError, TransientError
from .types import ChatResult, Conversation, Message

__all__ = ["ChatClient", "ChatResult", "Conversation", "Message", "PermanentError", "TransientError", "connect",
           "connect_function", "run_sync"]
