"""The explorer: `dfgpt serve`, a spreadsheet of the model in the browser (Starlette on uvicorn).

`sessions` keeps one sheet per model per browser (bounded, expiring when idle, one lock
each); `api` turns the Python API's answers into JSON; `routes` parses requests; `app`
serves the page (static/, no CDN), its colours and the JSON API under /api/.
"""
