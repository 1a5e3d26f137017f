# agendapy with its dashboard and postgres extras, for docker-compose.yml (or: docker build -t agendapy .).
# The default command runs the quick start's worker; docker-compose.yml points it at MongoDB, or at
# PostgreSQL with its `postgres` profile (AGENDAPY_DATABASE_URL).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY agendapy ./agendapy
RUN pip install ".[dashboard,postgres]" \
    && useradd --create-home --uid 10001 app
COPY examples ./examples

USER app
# `docker stop` sends SIGTERM: the worker stops claiming and gives running jobs --grace seconds (8).
STOPSIGNAL SIGTERM
CMD ["agendapy", "worker", "examples.quickstart:agenda"]
