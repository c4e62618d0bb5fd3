"""`tark chat`: talking to a provider plugin (tark core ABI §3.1) — selection, the adapter and auth-only modes,
the OpenAI-compatible model API client and the conversation."""
