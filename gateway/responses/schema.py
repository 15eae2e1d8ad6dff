"""Request models for POST /v1/responses: the pydantic shapes a body must fit (see validation.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
IncludeValue = Literal[
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "message.input_image.image_url",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "web_search_call.action.sources",
]


class Strict(BaseModel):
    """Configuration objects: typos are errors, no type coercion."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)


class Lenient(BaseModel):
    """Conversation items: extra fields (e.g. replayed output fields) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", hide_input_in_errors=True)


class InputText(Lenient):
    type: Literal["input_text"]
    text: str


class InputImage(Lenient):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["low", "high", "auto"] = "auto"

    @field_validator("image_url")
    @classmethod
    def _https_or_data(cls, url: str) -> str:
        if not url.startswith(("https://", "data:")):
            raise ValueError("image_url must be an https URL or a data URL")
        return url


class InputFile(Lenient):
    type: Literal["input_file"]
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _has_payload(self) -> InputFile:
        if self.file_data is None and self.file_url is None:
            raise ValueError("input_file needs file_data or file_url (file_id is not supported)")
        return self


class OutputText(Lenient):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] = []


class Refusal(Lenient):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")
]
ToolOutputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


class MessageItem(Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=64)
    name: str = Field(pattern=NAME_PATTERN)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=64)
    output: str | list[ToolOutputPart]
    id: str | None = None
    status: str | None = None


class SummaryText(Lenient):
    type: Literal["summary_text"]
    text: str


class ReasoningText(Lenient):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(Lenient):
    type: Literal["reasoning"]
    summary: list[SummaryText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    id: str | None = None
    status: str | None = None


class McpApprovalResponseItem(Lenient):
    type: Literal["mcp_approval_response"]
    approval_request_id: str
    approve: bool
    reason: str | None = None
    id: str | None = None


class McpApprovalRequestItem(Lenient):
    type: Literal["mcp_approval_request"]
    id: str
    server_label: str
    name: str
    arguments: str


class McpCallItem(Lenient):
    type: Literal["mcp_call"]
    id: str
    server_label: str
    name: str
    arguments: str
    output: str | None = None
    error: str | dict[str, Any] | None = None
    status: str | None = None
    approval_request_id: str | None = None


class McpListToolsItem(Lenient):
    type: Literal["mcp_list_tools"]
    id: str
    server_label: str
    tools: list[dict[str, Any]] = []
    error: str | None = None


class ItemReference(Lenient):
    type: Literal["item_reference"] = "item_reference"
    id: str


def _item_kind(value: Any) -> str | None:
    """The tag of an input item; a message may omit `type`, a reference may be a bare id."""
    if not isinstance(value, dict):
        return getattr(value, "type", None)
    if "type" in value:
        return value["type"]
    if "role" in value:
        return "message"
    return "item_reference" if "id" in value else None


ITEM_TYPES = (
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "mcp_approval_response",
    "mcp_approval_request",
    "mcp_call",
    "mcp_list_tools",
    "item_reference",
)
InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[McpApprovalResponseItem, Tag("mcp_approval_response")]
    | Annotated[McpApprovalRequestItem, Tag("mcp_approval_request")]
    | Annotated[McpCallItem, Tag("mcp_call")]
    | Annotated[McpListToolsItem, Tag("mcp_list_tools")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(
        _item_kind,
        custom_error_type="invalid_item_type",
        custom_error_message=f"Unsupported input item type; expected one of {', '.join(ITEM_TYPES)}",
    ),
]


class FunctionTool(Strict):
    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class McpToolFilter(Strict):
    tool_names: list[str] | None = None
    read_only: bool | None = None


class McpApprovalFilter(Strict):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


class McpTool(Strict):
    type: Literal["mcp"]
    server_label: str = Field(pattern=NAME_PATTERN)
    server_url: str | None = None
    allowed_tools: list[str] | McpToolFilter | None = None
    require_approval: Literal["always", "never"] | McpApprovalFilter | None = None
    authorization: str | None = Field(default=None, repr=False)
    headers: dict[str, str] | None = Field(default=None, repr=False)
    server_description: str | None = None
    connector_id: str | None = None

    def public_dict(self) -> dict[str, Any]:
        """The declaration as echoed to clients: secrets (authorization, headers) removed."""
        return self.model_dump(exclude={"authorization", "headers", "connector_id"})


def _tool_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"{kind}_tool" if isinstance(kind, str) else None


Tool = Annotated[
    Annotated[FunctionTool, Tag("function_tool")] | Annotated[McpTool, Tag("mcp_tool")],
    Discriminator(
        _tool_kind,
        custom_error_type="invalid_tool_type",
        custom_error_message="Unsupported tool type; expected 'function' or 'mcp'",
    ),
]


class FunctionChoice(Strict):
    type: Literal["function"]
    name: str


class McpChoice(Strict):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


class AllowedToolsChoice(Strict):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"] = "auto"
    tools: list[Annotated[FunctionChoice | McpChoice, Field(discriminator="type")]] = Field(
        min_length=1, max_length=128
    )


ToolChoice = (
    Literal["auto", "none", "required"]
    | Annotated[FunctionChoice | McpChoice | AllowedToolsChoice, Field(discriminator="type")]
)


class TextFormatText(Strict):
    type: Literal["text"]


class TextFormatJsonObject(Strict):
    type: Literal["json_object"]


class TextFormatJsonSchema(Strict):
    model_config = ConfigDict(populate_by_name=True)
    type: Literal["json_schema"]
    name: str = Field(pattern=NAME_PATTERN)
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(Strict):
    format: Annotated[
        TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
    ] = Field(default_factory=lambda: TextFormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(Strict):
    include_obfuscation: bool | None = None


class ConversationRef(Strict):
    id: str = Field(min_length=1, max_length=64)


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """OpenAI's metadata limits: at most 16 pairs, keys up to 64 and values up to 512 characters."""
    if len(metadata) > 16:
        raise ValueError("metadata may hold at most 16 key-value pairs")
    if any(len(key) > 64 for key in metadata):
        raise ValueError("metadata keys may be at most 64 characters")
    if any(len(value) > 512 for value in metadata.values()):
        raise ValueError("metadata values may be at most 512 characters")
    return metadata


Metadata = Annotated[dict[str, str], AfterValidator(check_metadata)]


class CreateResponseRequest(Strict):
    """A validated POST /v1/responses body."""

    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    tools: list[Tool] = []
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig = Field(default_factory=TextConfig)
    reasoning: ReasoningConfig | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    truncation: Literal["auto", "disabled"] = "disabled"
    metadata: dict[str, str] = {}
    include: list[IncludeValue] = []
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = Field(default=None, max_length=64)
    user: str | None = None
    store: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    background: bool = False

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, metadata: dict[str, str]) -> dict[str, str]:
        return check_metadata(metadata)

    @property
    def conversation_id(self) -> str | None:
        """The id of the `conversation` parameter (a string or `{"id": ...}`), if any."""
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation

    def input_items(self) -> list[dict[str, Any]]:
        """The input as plain item dicts (a string input becomes one user message)."""
        if isinstance(self.input, str):
            return [{"type": "message", "role": "user", "content": self.input}]
        return [item.model_dump(exclude_none=True, by_alias=True) for item in self.input]

    def function_tools(self) -> list[FunctionTool]:
        """The client-executed function tools."""
        return [tool for tool in self.tools if isinstance(tool, FunctionTool)]

    def mcp_tools(self) -> list[McpTool]:
        """The MCP declarations (built-in when server_url is None, remote otherwise)."""
        return [tool for tool in self.tools if isinstance(tool, McpTool)]
