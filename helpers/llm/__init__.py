"""One way to reach any model: an OpenAI-compatible endpoint, or an in-process model (transformers in this process,
or a vLLM engine the kit starts; see `device`, `vllm_engine`).

`Endpoint.from_params(params, "TEACHER").connect(...)` (or `connect(...)`) returns a `ChatClient` (concurrency,
retries, content cache, accounting) over one backend.
"""
from .client import ChatClient, connect, connect_function, run_sync
from .endpoint import Endpoint
from .errors import PermanentError, TransientError
from .types import ChatResult, Conversation, Message

__all__ = ["ChatClient", "ChatResult", "Conversation", "Endpoint", "Message", "PermanentError", "TransientError",
           "connect", "connect_function", "run_sync"]
