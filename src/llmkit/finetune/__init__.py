"""Fine-tuning: classification heads on labelled text (:mod:`llmkit.finetune.classify`),
instruction/chat tuning with a chat template and loss masks (:mod:`llmkit.finetune.sft`)."""
