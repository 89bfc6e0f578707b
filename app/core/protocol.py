"""The MMDuet2 dialogue protocol, exactly as the model was trained (docs/protocol.md §1).

Every string here is load-bearing: the model learned these bytes. Change none of them.
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You are a helpful assistant. Your task is to answer questions based on continuously incoming "
    "video frames. Your responses should include information from the video since your last reply "
    "(if any). If the information in this segment of the video cannot answer the question, output "
    '"NO REPLY".'
)
NO_REPLY = "NO REPLY"
# The name a server gives MMDuet2 and a client asks for when none is chosen (not a trained string).
MODEL_NAME = "mmduet2"
MUST_REPLY_PREFIX = "I must reply.\n"

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# Qwen2.5-VL's 22 added tokens, in the order of the released tokenizer (ids 151643…151664).
QWEN_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# The non-special ones (Qwen marks tool/fim/repo tokens as not special).
QWEN_NON_SPECIAL = frozenset(
    {"<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
     "<|repo_name|>", "<|file_sep|>"}
)

# Training and inference settings from the paper (docs/protocol.md §1.5, §1.6).
PATCH_PX = 28  # one merged visual token covers 28×28 pixels
DEFAULT_TOKENS_PER_FRAME = 128
DEFAULT_INTERVAL_S = 1.0  # the paper recommends 1 s at inference, 2 s for training
DEFAULT_FRAMES_PER_TURN = 2


def is_silence(text: str) -> bool:
    """Whether a decoded assistant turn means "stay silent".

    Evaluation matches ``NO REPLY`` exactly; the reference demo accepts any reply starting with
    "NO". We take the exact form after stripping whitespace, which is what the model emits.
    """
    return text.strip() == NO_REPLY


def system_turn(prompt: str = SYSTEM_PROMPT) -> str:
    return f"{IM_START}system\n{prompt}{IM_END}\n"


def user_turn(n_images: int, text: str = "", image_marker: str = "<image>") -> str:
    """A user turn with ``n_images`` frames first and the optional text after them.

    ``image_marker`` is whatever the backend expands into ``<|vision_start|><|image_pad|>×N<|vision_end|>``
    (libmtmd's media marker in-process; the full expansion when rendering for transformers).
    """
    return f"{IM_START}user\n{image_marker * n_images}{text}{IM_END}\n"


def assistant_prefix(must_reply: bool = False) -> str:
    """The generation prompt; "I must reply.\\n" prefills the reply when forced (docs/protocol.md §1.4)."""
    return f"{IM_START}assistant\n" + (MUST_REPLY_PREFIX if must_reply else "")


def assistant_tail(text: str) -> str:
    """What follows the generation prompt once the reply is known."""
    return f"{text}{IM_END}\n"


def hf_image_placeholder(n_tokens: int) -> str:
    """The expanded form of one image in the text stream, for transformers."""
    return VISION_START + IMAGE_PAD * n_tokens + VISION_END


# The stock Qwen2-VL / Qwen2.5-VL chat template (stored in GGUF metadata and the HF tokenizer).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
