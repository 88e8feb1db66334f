{{- define "hooks.job" -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .name }}
  annotations:
    helm.sh/hook: {{ .hook | quote }}
    {{- if hasKey . "weight" }}
    helm.sh/hook-weight: {{ .weight | quote }}
    {{- end }}
    {{- if hasKey . "policy" }}
    helm.sh/hook-delete-policy: {{ .policy | quote }}
    {{- end }}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: run
          image: busybox:1.36
          command: ["true"]
{{- end -}}
