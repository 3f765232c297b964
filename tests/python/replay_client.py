"""An independent client of K2's replay port (the `websockets` library):
connects to URL, reads every frame until the server closes, and prints one
JSON object: the frames' texts, the close code and reason; or, when the
handshake is refused, the HTTP status and body.

usage: replay_client.py URL [API_KEY]   (the key goes in X-API-Key)
"""
import asyncio
import json
import sys

import websockets
from websockets.exceptions import InvalidStatus


async def main(url, key):
    headers = {"X-API-Key": key} if key else None
    try:
        async with websockets.connect(url, max_size=None, open_timeout=30, additional_headers=headers) as ws:
            frames = [message async for message in ws]
            return {"frames": frames, "close_code": ws.close_code, "close_reason": ws.close_reason}
    except InvalidStatus as refused:
        response = refused.response
        return {"status": response.status_code, "body": response.body.decode("utf-8", "replace")}


print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))))
