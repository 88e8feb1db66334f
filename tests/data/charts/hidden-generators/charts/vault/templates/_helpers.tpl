{{- define "vault.secret" -}}
{{ include "vault.random" . }}
{{- end }}

{{- define "vault.random" -}}
{{ randAlphaNum 12 }}
{{- end }}
