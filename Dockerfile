# majicbot on a CUDA runtime image: `majicbot run` (engine + chat adapters) with data/ as a volume.
#   docker build -t majicbot .
#   docker run --rm --gpus all -v majicbot-data:/srv/majicbot/data majicbot download
#   docker run -d --gpus all -v majicbot-data:/srv/majicbot/data -e MAJICBOT_TELEGRAM_TOKEN=... majicbot
# The torch wheel brings its own CUDA libraries; the host needs an NVIDIA driver for CUDA 13.0 and the
# NVIDIA Container Toolkit. compose.yaml runs the chat side, the engine and PostgreSQL separately.
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/majicbot
COPY pyproject.toml README.md constraints-gpu.txt ./
COPY bot ./bot
COPY engine ./engine
COPY storage ./storage
COPY models ./models
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install '.[gpu,postgres,metrics]' -c constraints-gpu.txt \
       --extra-index-url https://download.pytorch.org/whl/cu130

# Relative defaults (data/majicbot.db, data/images, data/models) resolve under the working directory.
RUN useradd --create-home --uid 1000 majicbot \
    && mkdir -p /srv/majicbot/data \
    && chown -R majicbot:majicbot /srv/majicbot
ENV PATH=/opt/venv/bin:$PATH
USER majicbot
WORKDIR /srv/majicbot
VOLUME ["/srv/majicbot/data"]

# Tokens come from MAJICBOT_TELEGRAM_TOKEN / MAJICBOT_DISCORD_TOKEN; a config file from
# /srv/majicbot/config.toml or MAJICBOT_CONFIG. Any other subcommand works: `docker run ... doctor`.
ENTRYPOINT ["majicbot"]
CMD ["run"]
