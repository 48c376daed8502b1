"""An async, typed client of the koo-feed read API and its event intake (``POST /v1/events``).

    async with FeedClient("http://feed.internal:8080", token) as feed:
        async for item in feed.iter_feed("user0010", limit=50):
            print(item.koo_id, item.reason, item.score)
"""

from koo_feed_client._client import Backoff, FeedClient
from koo_feed_client._errors import (
    ClientError,
    InvalidCursor,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from koo_feed_client._models import (
    ErrorDetail,
    Explain,
    FeedItem,
    FollowRecommendation,
    Health,
    Koo,
    KooRecommendation,
    Page,
    Problem,
    Reaction,
    User,
)
from koo_feed_client._notifications import Notification, NotificationPage
from koo_feed_client._stream import StreamEvent
from koo_feed_client._version import __version__

__all__ = [
    "Backoff",
    "ClientError",
    "ErrorDetail",
    "Explain",
    "FeedClient",
    "FeedItem",
    "FollowRecommendation",
    "Health",
    "InvalidCursor",
    "InvalidRequest",
    "Koo",
    "KooRecommendation",
    "NotFound",
    "Notification",
    "NotificationPage",
    "Page",
    "Problem",
    "RateLimited",
    "Reaction",
    "StreamEvent",
    "Unauthorized",
    "Unavailable",
    "User",
    "__version__",
]
