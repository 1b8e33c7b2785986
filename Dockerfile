# syntax=docker/dockerfile:1
# One image for every Pacekeeper process: `pacekeeper run ingest|aggregator|alerts`,
# `pacekeeper migrate`, `pacekeeper apply -f ...` (see docker-compose.yml).
#
#   docker build -t pacekeeper:local .
#   docker run --rm pacekeeper:local --help

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Same uv as `make setup` (Makefile UV_VERSION).
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN pip install "uv==${UV_VERSION}" \
    && uv venv --python /usr/local/bin/python3.11 /opt/pacekeeper
WORKDIR /src

# Dependencies in a layer of their own, rebuilt only when the lock changes. The lock also
# pins the dev tools (pytest, mypy, ...); compiling the runtime requirements against it as
# constraints keeps exactly the locked versions and leaves the dev tools out.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip compile pyproject.toml --constraint requirements.lock \
        --python /opt/pacekeeper/bin/python --no-header --quiet --output-file runtime.txt \
    && uv pip sync --python /opt/pacekeeper/bin/python runtime.txt

COPY README.md ./
COPY shared ./shared
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /opt/pacekeeper/bin/python --no-deps . \
    && /opt/pacekeeper/bin/pacekeeper --help >/dev/null


FROM ${PYTHON_IMAGE} AS runtime
# Pango and HarfBuzz for WeasyPrint (`pacekeeper report --format pdf`), with a Latin and a
# CJK font (PACEKEEPER_LOCALE=zh-CN reports).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pacekeeper \
    && useradd --system --uid 10001 --gid pacekeeper --home-dir /home/pacekeeper \
        --create-home --shell /usr/sbin/nologin pacekeeper

COPY --from=build /opt/pacekeeper /opt/pacekeeper
ENV PATH=/opt/pacekeeper/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Fail the build, not the first report, when a native library is missing.
RUN python -c "import weasyprint, matplotlib, psycopg, orjson"

USER 10001:10001
WORKDIR /home/pacekeeper
# ingest, aggregator (health/metrics), alerts
EXPOSE 8080 8081 8082
ENTRYPOINT ["pacekeeper"]
CMD ["--help"]
