"""The Responses API core: request schema, item/message translation and the event builder."""
