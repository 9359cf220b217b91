"""Gemini Live on Vertex AI through livegate's `/vertex_ai/live`, with the google-genai SDK unmodified.

    python examples/vertex_live.py "Hello there"

google-genai speaks only TLS, so livegate must serve it (`--ssl-certfile/--ssl-keyfile`) and the SDK must
trust the certificate (SSL_CERT_FILE=cert.pem for a self-signed one). With livegate's built-in config
(no --config) the simulator answers, offline, with no Google credentials: README "Vertex AI offline".
The key in LIVEGATE_API_KEY, if any, travels as x-goog-api-key (Vertex express-mode spelling).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from google import genai


async def talk(url: str, model: str, text: str) -> None:
    client = genai.Client(vertexai=True, api_key=os.environ.get("LIVEGATE_API_KEY", "no-key"),
                          http_options={"base_url": url})
    config = {"response_modalities": ["AUDIO"], "output_audio_transcription": {}}
    async with client.aio.live.connect(model=model, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": text}]})
        async for message in session.receive():  # ends with the model's turn
            said = message.server_content and message.server_content.output_transcription
            if said and said.text:
                print(said.text, end="", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", nargs="?", default="Hello there")
    parser.add_argument("--url", default="https://localhost:4000/vertex_ai/live")
    parser.add_argument("--model", default="gemini-live-2.5-flash")
    args = parser.parse_args()
    asyncio.run(talk(args.url, args.model, args.text))


if __name__ == "__main__":
    main()
