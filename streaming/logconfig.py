"""Flink's log configuration as vatic's jobs need it, for every place a Flink JVM runs the job: the local
mini-cluster (``LOG4J_PROPERTIES``), the stack's standalone cluster and the rendered FlinkDeployment.

Contract: a Flink process running a Python job never logs the Python workers' environment. Beam's
``DefaultJobBundleFactory`` and ``ProcessEnvironmentFactory`` print the whole process environment of a Python
worker (every variable the TaskManager has, secrets from Kubernetes Secrets included, such as
``VATIC_KAFKA_SASL_PASSWORD``) when they close, expire or wait for one, at INFO and at WARN; none of their ERROR
messages carries it, so :data:`QUIET_LOGGERS` raises both to ERROR (the price: those cleanup and start-up notes are
not logged). A test greps the job's logs for the secret. The Kafka clients log their configuration with passwords
hidden, but they are noisy at INFO: WARN as well. This module imports no PyFlink.
"""

from __future__ import annotations

#: logger -> level, for every Flink process of a vatic job
QUIET_LOGGERS: dict[str, str] = {
    "org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory": "ERROR",
    "org.apache.beam.runners.fnexecution.environment.ProcessEnvironmentFactory": "ERROR",
    "org.apache.pekko": "WARN",
    "org.apache.kafka": "WARN",
    "org.apache.flink.kafka.shaded.org.apache.kafka": "WARN",
}


def logger_lines(loggers: dict[str, str] | None = None) -> list[str]:
    """log4j2 properties lines that set each logger's level."""
    lines = []
    for index, (name, level) in enumerate((loggers or QUIET_LOGGERS).items()):
        lines += [f"logger.vatic{index}.name = {name}", f"logger.vatic{index}.level = {level}"]
    return lines


def file_log4j() -> str:
    """A log4j2 configuration writing to Flink's ``log.file`` (the mini-cluster's client-side JVM)."""
    return "\n".join(
        [
            "# written by vatic (vatic.streaming.logconfig)",
            "monitorInterval = 30",
            "rootLogger.level = ${env:ROOT_LOG_LEVEL:-INFO}",
            "rootLogger.appenderRef.file.ref = FileAppender",
            "appender.file.name = FileAppender",
            "appender.file.type = FILE",
            "appender.file.append = false",
            "appender.file.fileName = ${sys:log.file}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n",
            "logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline",
            "logger.netty.level = OFF",
            *logger_lines(),
            "",
        ]
    )


def console_log4j() -> str:
    """A log4j2 configuration writing to the console (Kubernetes pods: the FlinkDeployment's
    ``log4j-console.properties``), with :data:`QUIET_LOGGERS`."""
    return "\n".join(
        [
            "# rendered by vatic (vatic.streaming.logconfig): never log the Python workers' environment",
            "rootLogger.level = ${env:ROOT_LOG_LEVEL:-INFO}",
            "rootLogger.appenderRef.console.ref = ConsoleAppender",
            "appender.console.name = ConsoleAppender",
            "appender.console.type = CONSOLE",
            "appender.console.layout.type = PatternLayout",
            "appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n",
            "logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline",
            "logger.netty.level = OFF",
            *logger_lines(),
            "",
        ]
    )
