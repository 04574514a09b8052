"""The one function that turns a task prompt into model input text.

`chat: {template: none}` (the embedded default) leaves the prompt as it is. `template: auto`
renders it as one user turn through the checkpoint's chat template with a generation prompt,
exactly as lm-eval's `HFLM.apply_chat_template` does (same call, same keyword arguments, e.g.
`enable_thinking: false`), so the student's rollouts, the teacher's scoring (including a
privileged `teacher_prompt`) and lm-eval see the same token ids.
"""
from __future__ import annotations

CHAT_TEMPLATES = ("auto", "none")


def check_chat(chat: dict | None, where: str = "chat") -> dict:
    chat = dict(chat or {})
    mode = chat.get("template", "none")
    if mode not in CHAT_TEMPLATES:
        raise ValueError(f"{where}.template = {mode!r}; allowed: {', '.join(CHAT_TEMPLATES)}")
    if not isinstance(chat.get("kwargs", {}), dict):
        raise ValueError(f"{where}.kwargs = {chat['kwargs']!r}; allowed: a mapping of chat-template arguments")
    return {"template": mode, "kwargs": chat.get("kwargs", {})}


def uses_template(tokenizer, chat: dict | None) -> bool:
    chat = check_chat(chat)
    if chat["template"] == "auto" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat.template = 'auto', but the tokenizer has no chat template; use 'none'")
    return chat["template"] == "auto"


def render_prompt(tokenizer, text: str, chat: dict | None) -> str:
    """A task prompt as the model reads it (plain, or one user turn through the chat template)."""
    if not uses_template(tokenizer, chat):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True, continue_final_message=False,
                                         **check_chat(chat)["kwargs"])


def encode_prompts(tokenizer, texts: list[str], chat: dict | None = None) -> list[list[int]]:
    """Token ids of rendered prompts; special tokens are not added twice to a text that starts with BOS."""
    rendered = [render_prompt(tokenizer, t, chat) for t in texts]
    bos = getattr(tokenizer, "bos_token", None)
    if uses_template(tokenizer, chat) and bos and rendered and rendered[0].startswith(bos):
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return tokenizer(rendered)["input_ids"]
