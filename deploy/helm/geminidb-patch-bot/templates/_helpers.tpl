{{/* The chart's name, or nameOverride. */}}
{{- define "gpb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, or release-chart (once). */}}
{{- define "gpb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object has. */}}
{{- define "gpb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gpb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The labels that select the bot's pods. */}}
{{- define "gpb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gpb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gpb.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: repository@digest, or repository:tag. */}}
{{- define "gpb.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The claim holding the bbolt file. */}}
{{- define "gpb.claimName" -}}
{{- default (printf "%s-data" (include "gpb.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* Refuse combinations that would run but lose data or block operations. */}}
{{- define "gpb.validate" -}}
{{- if and (eq .Values.store.type "bbolt") (gt (int .Values.replicaCount) 1) -}}
{{- fail "replicaCount > 1 needs store.type redis: a bbolt store file is held by one process at a time" -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownTimeoutSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than shutdownTimeoutSeconds (%d): the bot needs that long after SIGTERM to finish batch calls in flight" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownTimeoutSeconds)) -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (lt (int .Values.replicaCount) 2) -}}
{{- fail "podDisruptionBudget.enabled needs replicaCount >= 2 (with one replica it would block every node drain)" -}}
{{- end -}}
{{- if and (eq .Values.store.type "redis") .Values.persistence.enabled -}}
{{- fail "persistence is for the bbolt store; with store.type redis set persistence.enabled false" -}}
{{- end -}}
{{- end -}}
