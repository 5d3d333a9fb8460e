"""Grounded chat in the Azure OpenAI On Your Data shape. Knows nothing of Azure Functions.

endpoint.py       respond(): the whole endpoint as one call, body in, ChatResponse out
request.py        validation of the request body into a ChatRequest
prompt_image.py   the prompt image: data: URL, or an allow-listed URL behind an SSRF guard
completion.py     retrieval + answerer + citations for one request
response.py       message context, chat.completion JSON, chunk stream (SSE), errors
errors.py         ChatError, in OpenAI's error shape
"""
