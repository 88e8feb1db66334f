{{/* The token comes from the vault subchart, two definitions away: include "vault.secret" */}}
{{- define "hidden.token" -}}
{{ include "vault.secret" . }}
{{- end }}

{{- define "hidden.labels" -}}
app: {{ .Release.Name }}
{{- end }}
