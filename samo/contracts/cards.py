"""Model cards: the `samo.json` beside every exported model, read by the gateway."""

CARD_FILE = "samo.json"
