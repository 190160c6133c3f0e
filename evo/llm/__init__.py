"""The LLM stack: clients, prompts, and the parsing and applying of model replies."""
