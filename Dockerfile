# syntax=docker/dockerfile:1
# One image for every role: `feed api`, `feed worker`, `feed tables create`, ...
# (docker-compose.yml picks the command). Built with: docker build -t koo-feed .

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# The runtime dependencies first, in their own layer, so a code change does not
# reinstall them: they are read from pyproject.toml's [project] dependencies, at the
# exact versions constraints.txt pins (how to regenerate it: its header).
COPY pyproject.toml README.md constraints.txt ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/tmp/requirements.txt \
    && /opt/venv/bin/pip install --constraint constraints.txt -r /tmp/requirements.txt
COPY feed ./feed
COPY workers ./workers
COPY config ./config
# Then nothing may be installed that constraints.txt does not pin, at its version.
RUN /opt/venv/bin/pip install --constraint constraints.txt . \
    && /opt/venv/bin/python -c "import feed.cli, workers, config" \
    && /opt/venv/bin/pip freeze --exclude koo-feed | sort -f >/tmp/installed.txt \
    && grep -v '^#' constraints.txt | sort -f | diff - /tmp/installed.txt \
    || { echo "constraints.txt does not match what was installed: regenerate it" >&2; exit 1; }

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 feed \
    && useradd --system --uid 10001 --gid feed --home-dir /home/feed --create-home \
        --shell /usr/sbin/nologin feed
COPY --from=build /opt/venv /opt/venv
# Numeric, so a runtime can verify it is not root (runAsNonRoot).
USER 10001:10001
WORKDIR /home/feed
EXPOSE 8080
# The API by default; compose overrides the command for the other roles.
CMD ["feed", "api", "--host", "0.0.0.0", "--port", "8080"]
