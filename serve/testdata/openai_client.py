"""Talks to fungtrain serve with the official openai Python package.

Usage: openai_client.py BASE_URL API_KEY
Prints one JSON object with the answers of a chat, a streamed chat (with
usage), a completion and the model list.
"""
import json
import sys

import openai

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
out = {"version": openai.__version__}

chat = client.chat.completions.create(
    model="SmolLM2-135M-Instruct.Q4_1.gguf",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=12,
    temperature=0,
)
out["chat"] = {
    "text": chat.choices[0].message.content,
    "finish": chat.choices[0].finish_reason,
    "usage": [chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens],
}

text, finish, usage, roles = [], None, None, []
for chunk in client.chat.completions.create(
    messages=[
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why do leaves change color?"},
    ],
    model="SmolLM2-135M-Instruct.Q4_1.gguf",
    max_completion_tokens=10,
    stream=True,
    stream_options={"include_usage": True},
    stop=["\n\n"],
):
    if chunk.usage is not None:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens]
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            text.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {"text": "".join(text), "finish": finish, "usage": usage, "roles": roles}

comp = client.completions.create(
    model="SmolLM2-135M-Instruct.Q4_1.gguf", prompt="The three primary colors are", max_tokens=8
)
out["completion"] = {"text": comp.choices[0].text, "finish": comp.choices[0].finish_reason,
                     "usage": [comp.usage.prompt_tokens, comp.usage.completion_tokens, comp.usage.total_tokens]}

out["models"] = [m.id for m in client.models.list()]

try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    out["unknown_model"] = "no error"
except openai.NotFoundError as e:
    out["unknown_model"] = e.status_code

bad = openai.OpenAI(base_url=base_url, api_key="wrong-key", max_retries=0)
try:
    bad.models.list()
    out["wrong_key"] = "no error"
except openai.AuthenticationError as e:
    out["wrong_key"] = e.status_code

print(json.dumps(out))
