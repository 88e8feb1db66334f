{{/* Names, labels and the image of the fleetbus-edge chart. */}}

{{- define "fleetbus-edge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleetbus-edge.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
fleetbus.io/cluster: {{ .Values.cluster | quote }}
{{- end -}}

{{- define "fleetbus-edge.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fleetbus-edge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "fleetbus-edge.bundleSecret" -}}
{{- .Values.tls.existingSecret | default (printf "%s-bundle" (include "fleetbus-edge.fullname" .)) -}}
{{- end -}}

{{/* The StatefulSet's component: "edge" (leaf, connector and controller in one pod, the
default layout) or "connector" (the split layout, with the controller in its own Deployment). */}}
{{- define "fleetbus-edge.edgeComponent" -}}
{{- if eq .Values.layout "split" -}}connector{{- else -}}edge{{- end -}}
{{- end -}}

{{/* The StatefulSet's (and its ServiceAccount's) name: the release's own in the single layout,
`<release>-connector` in the split layout. */}}
{{- define "fleetbus-edge.edgeName" -}}
{{- if eq .Values.layout "split" -}}
{{- printf "%s-connector" (include "fleetbus-edge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "fleetbus-edge.fullname" . -}}
{{- end -}}
{{- end -}}
